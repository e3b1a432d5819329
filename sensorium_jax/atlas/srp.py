"""SRP-ridge: sparse random projection, z-scored columns, ridge with GCV, Pearson r per neuron."""

from __future__ import annotations

import zlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sensorium_jax.atlas import projection as proj_lib
from sensorium_jax.atlas import ridge


def _alphas(alpha: float | Sequence[float]) -> jax.Array:
    return jnp.asarray(np.atleast_1d(np.asarray(alpha, np.float32)))


@jax.jit
def _projected_gram(features: jax.Array, rows: jax.Array, values: jax.Array) -> jax.Array:
    z = ridge.zscore_columns(proj_lib._sparse_apply(features, rows, values))
    return ridge.centred_gram(z)


@jax.jit
def _dense_projected_gram(features: jax.Array, matrix: jax.Array) -> jax.Array:
    return ridge.centred_gram(ridge.zscore_columns(features @ matrix))


def projected_gram(
    features: Any,
    *,
    projection: Any = None,
    n_components: int | None = None,
    eps: float = 0.1,
    seed: int = 0,
) -> jax.Array:
    """Centred Gram matrix [n, n] of the z-scored sparse random projection of [n, d] features.

    `projection` (a [d, k] dense or SciPy sparse matrix, or a SparseProjection) replaces the
    random one; otherwise k = n_components or the Johnson-Lindenstrauss minimum for n at eps.
    """
    features = jnp.asarray(features, jnp.float32).reshape(np.shape(features)[0], -1)
    n, d = features.shape
    if projection is None:
        k = n_components or proj_lib.jl_min_dim(n, eps)
        projection = proj_lib.sparse_random_projection(d, k, seed=seed)
    elif not isinstance(projection, proj_lib.SparseProjection):
        projection = proj_lib.from_matrix(projection)
    if isinstance(projection, proj_lib.SparseProjection):
        if projection.n_features != d:
            raise ValueError(f"projection expects {projection.n_features} features, got {d}")
        return _projected_gram(features, projection.rows, projection.values)
    if projection.shape[0] != d:
        raise ValueError(f"projection expects {projection.shape[0]} features, got {d}")
    return _dense_projected_gram(features, projection)


def srp_ridge_scores(
    features: Any,
    responses: Any,
    *,
    projection: Any = None,
    alpha: float | Sequence[float] = 1.0,
    seed: int = 0,
    n_components: int | None = None,
    eps: float = 0.1,
) -> np.ndarray:
    """Pearson r [neurons] between responses [n, neurons] and their leave-one-out ridge predictions
    from the z-scored sparse random projection of features [n, d] (one layer).

    alpha: one penalty, or a grid (then per neuron the alpha of least leave-one-out error).
    """
    gram = projected_gram(features, projection=projection, n_components=n_components, eps=eps, seed=seed)
    return np.asarray(ridge.gcv_scores(gram, jnp.asarray(responses, jnp.float32), _alphas(alpha)))


def layer_seed(seed: int, layer: str) -> int:
    """A stable per-layer seed, so a layer's projection does not depend on which others are scored."""
    return (seed * 1_000_003 + zlib.crc32(layer.encode())) % (2**31)


def layer_grams(
    features: Mapping[str, Any], *, seed: int = 0, n_components: int | None = None, eps: float = 0.1
) -> dict[str, jax.Array]:
    """Per layer, the centred Gram matrix of its projection (the only per-layer work)."""
    return {
        name: projected_gram(x, n_components=n_components, eps=eps, seed=layer_seed(seed, name))
        for name, x in features.items()
    }


def scores_from_grams(
    grams: Sequence[jax.Array], responses: Any, alpha: float | Sequence[float] = 1.0
) -> np.ndarray:
    """r [layers, neurons] for stacked Gram matrices: one batched computation over layers and neurons."""
    stacked = jnp.stack([jnp.asarray(g) for g in grams])
    return np.asarray(ridge.gcv_scores(stacked, jnp.asarray(responses, jnp.float32), _alphas(alpha)))
