"""Sparse random projections (Li et al. 2006), the dimensionality reduction of the atlas.

A projection is stored column-wise as fixed-width index/value lists ([k, width]), so that
projecting n stimuli is one gather and one reduction per column block: about
``n * nnz`` multiply-adds instead of the ``n * d * k`` of a dense product.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class SparseProjection(NamedTuple):
    """A [d, k] matrix held as, per output column, `width` (row, value) pairs (value 0 = padding)."""

    rows: jax.Array  # [k, width] int32
    values: jax.Array  # [k, width] float32
    n_features: int

    @property
    def n_components(self) -> int:
        return int(self.rows.shape[0])


Projection = SparseProjection | jax.Array


def jl_min_dim(n_samples: int, eps: float = 0.1) -> int:
    """Johnson-Lindenstrauss minimum dimension, 4 ln(n) / (eps^2/2 - eps^3/3).

    The formula of Dasgupta & Gupta as used by scikit-learn; 119 stimuli at eps 0.1 give 4,096.
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1), got {eps}")
    return int(4.0 * math.log(n_samples) / (eps**2 / 2.0 - eps**3 / 3.0))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _draw(key: jax.Array, n_features: jax.Array, density: jax.Array, n_components: int, width: int):
    """Per column, rows of the non-zeros as cumulative geometric gaps (exactly i.i.d. Bernoulli
    entries) and their values; only the shapes are static, so layers of any size share one compile."""
    k_gap, k_sign = jax.random.split(key)
    u = jax.random.uniform(k_gap, (n_components, width), minval=jnp.finfo(jnp.float32).tiny)
    log_q = jnp.log1p(-jnp.minimum(density, 1.0 - 1e-7))
    gaps = jnp.where(density >= 1.0, 1.0, jnp.floor(jnp.log(u) / log_q) + 1.0)
    gaps = jnp.minimum(gaps, n_features + 1.0).astype(jnp.int32)  # no overflow in the sum
    rows = jnp.cumsum(gaps, axis=1) - 1
    signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (n_components, width)), 1.0, -1.0)
    valid = rows < n_features
    values = jnp.where(valid, signs / jnp.sqrt(density * n_components), 0.0).astype(jnp.float32)
    exhausted = jnp.all(rows[:, -1] >= n_features)
    return jnp.where(valid, rows, 0).astype(jnp.int32), values, exhausted


def sparse_random_projection(
    n_features: int, n_components: int, *, density: float | None = None, seed: int = 0
) -> SparseProjection:
    """The random matrix of scikit-learn's SparseRandomProjection (same distribution, not the same draw).

    Entries are independently 0 with probability 1 - s and +-1/sqrt(s k) otherwise, s = density
    (default 1/sqrt(d)). Used even when k > d (then it increases the dimension, as in the paper).
    """
    s = 1.0 / math.sqrt(n_features) if density is None else float(density)
    if not 0.0 < s <= 1.0:
        raise ValueError(f"density must lie in (0, 1], got {s}")
    mean = n_features * s
    width = math.ceil(mean + 6.0 * math.sqrt(mean * (1 - s)) + 8)
    step = 1 << max(3, (width - 1).bit_length() - 4)
    width = min(n_features, -(-width // step) * step)  # within 1/16: few distinct shapes to compile
    key = jax.random.key(seed)
    while True:
        rows, values, exhausted = _draw(key, jnp.float32(n_features), jnp.float32(s), n_components, width)
        # Exact only if every column's draws ran past the last feature.
        if width >= n_features or bool(exhausted):
            return SparseProjection(rows, values, n_features)
        width = min(n_features, 2 * width)


def from_matrix(matrix: Any) -> Projection:
    """An explicit [d, k] projection: a SciPy sparse matrix (kept sparse) or a dense array."""
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - SciPy is optional
        sp = None
    if sp is not None and sp.issparse(matrix):
        csc = sp.csc_matrix(matrix)
        csc.sum_duplicates()
        d, k = csc.shape
        counts = np.diff(csc.indptr)
        width = max(int(counts.max(initial=0)), 1)
        rows = np.zeros((k, width), np.int32)
        values = np.zeros((k, width), np.float32)
        col_of = np.repeat(np.arange(k), counts)
        slot = np.arange(csc.nnz) - np.repeat(csc.indptr[:-1], counts)
        rows[col_of, slot] = csc.indices
        values[col_of, slot] = csc.data
        return SparseProjection(jnp.asarray(rows), jnp.asarray(values), int(d))
    dense = jnp.asarray(np.asarray(matrix), jnp.float32)
    if dense.ndim != 2:
        raise ValueError(f"a projection is a [d, k] matrix, got shape {dense.shape}")
    return dense


def to_dense(projection: Projection) -> np.ndarray:
    """The [d, k] matrix as a NumPy array (for tests and small cases)."""
    if isinstance(projection, SparseProjection):
        k, _ = projection.rows.shape
        out = np.zeros((projection.n_features, k), np.float32)
        cols = np.broadcast_to(np.arange(k)[:, None], projection.rows.shape)
        np.add.at(out, (np.asarray(projection.rows), cols), np.asarray(projection.values))
        return out
    return np.asarray(projection)


@jax.jit
def _sparse_apply(features: jax.Array, rows: jax.Array, values: jax.Array) -> jax.Array:
    """[n, d] x sparse [d, k] -> [n, k], in column blocks to bound memory."""
    k, width = rows.shape
    n = features.shape[0]
    block = max(1, min(k, (1 << 17) // max(1, width * n)))  # a cache-sized gather per step (measured)
    n_blocks = -(-k // block)
    pad = n_blocks * block - k
    rows_b = jnp.pad(rows, ((0, pad), (0, 0))).reshape(n_blocks, block, width)
    values_b = jnp.pad(values, ((0, pad), (0, 0))).reshape(n_blocks, block, width)
    xt = features.T  # [d, n]: one gathered row is one feature for all stimuli

    def one(args):
        r, v = args
        return jnp.einsum("bwn,bw->bn", xt[r], v)

    out = jax.lax.map(one, (rows_b, values_b))  # [n_blocks, block, n]
    return out.reshape(n_blocks * block, n)[:k].T


def project(features: jax.Array, projection: Projection) -> jax.Array:
    """Apply a projection to [n, d] features."""
    features = jnp.asarray(features, jnp.float32)
    if isinstance(projection, SparseProjection):
        if features.shape[1] != projection.n_features:
            raise ValueError(
                f"projection expects {projection.n_features} features, got {features.shape[1]}"
            )
        return _sparse_apply(features, projection.rows, projection.values)
    if features.shape[1] != projection.shape[0]:
        raise ValueError(f"projection expects {projection.shape[0]} features, got {features.shape[1]}")
    return features @ projection
