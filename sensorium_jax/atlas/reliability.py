"""Split-half reliability over repeats (Spearman-Brown corrected), per neuron and per site RDM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sensorium_jax.atlas import rsa


def spearman_brown(r: jax.Array) -> jax.Array:
    """Reliability of the full set from the correlation of its two halves: 2r / (1 + r)."""
    return 2.0 * r / (1.0 + r)


def split_permutations(n_repeats: int, n_splits: int = 100, seed: int = 0) -> np.ndarray:
    """[n_splits, n_repeats] permutations: the first half of each row is one half of the repeats."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_repeats) for _ in range(n_splits)]).astype(np.int32)


def _halves(repeats: jax.Array, perm: jax.Array) -> tuple[jax.Array, jax.Array]:
    half = perm.shape[0] // 2
    a = jnp.nanmean(repeats[perm[:half]], axis=0)
    b = jnp.nanmean(repeats[perm[half : 2 * half]], axis=0)
    return a, b


def _pearson_columns(a: jax.Array, b: jax.Array) -> jax.Array:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    den = jnp.sqrt(jnp.sum(a * a, 0) * jnp.sum(b * b, 0))
    return jnp.where(den > 0, jnp.sum(a * b, 0) / jnp.where(den > 0, den, 1.0), 0.0)


@jax.jit
def _neuron_split_r(repeats: jax.Array, perms: jax.Array) -> jax.Array:
    return jax.lax.map(lambda p: _pearson_columns(*_halves(repeats, p)), perms)


def split_half_reliability(repeats, *, n_splits: int = 100, seed: int = 0) -> np.ndarray:
    """Per neuron: mean over random splits of the repeats of r(half A mean, half B mean) across
    stimuli, then Spearman-Brown corrected.

    repeats: [n_repeats, n_stimuli, neurons]; NaN marks a missing repeat (ignored in the means).
    With an odd number of repeats one is left out of each split.
    """
    repeats = jnp.asarray(repeats, jnp.float32)
    perms = jnp.asarray(split_permutations(repeats.shape[0], n_splits, seed))
    r = _neuron_split_r(repeats, perms).mean(axis=0)
    return np.asarray(spearman_brown(r))


@jax.jit
def _rdm_split_r(repeats: jax.Array, perms: jax.Array, mask: jax.Array) -> jax.Array:
    def one(p):
        a, b = _halves(repeats, p)
        return rsa.compare_rdms(rsa.rdm(a, mask), rsa.rdm(b, mask))

    return jax.lax.map(one, perms)


def rdm_reliability(repeats, *, mask=None, n_splits: int = 100, seed: int = 0) -> float:
    """Split-half reliability of a site's RDM (the RSA ceiling), Spearman-Brown corrected.

    mask: [neurons] bool, the site's neurons (default all).
    """
    repeats = jnp.asarray(repeats, jnp.float32)
    perms = jnp.asarray(split_permutations(repeats.shape[0], n_splits, seed))
    mask = jnp.ones(repeats.shape[2], bool) if mask is None else jnp.asarray(mask, bool)
    return float(spearman_brown(_rdm_split_r(repeats, perms, mask).mean()))
