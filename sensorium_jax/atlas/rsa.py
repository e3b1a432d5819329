"""Representational similarity analysis: RDMs (1 - Pearson between stimuli) and their comparison."""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp

Method = Literal["pearson", "spearman"]


@jax.jit
def rdm(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """[n, n] dissimilarity 1 - Pearson r between the response vectors [n, features] of stimuli.

    mask: [features] bool, the features (neurons) to use; a mask instead of a selection keeps one
    compiled shape for every site of a recording.
    """
    x = jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1)
    m = jnp.ones(x.shape[1], bool) if mask is None else jnp.asarray(mask, bool)
    count = jnp.maximum(jnp.sum(m), 1)
    x = jnp.where(m, x, 0.0)
    x = jnp.where(m, x - x.sum(axis=1, keepdims=True) / count, 0.0)
    norm = jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True))
    x = x / jnp.where(norm > 0, norm, 1.0)
    return 1.0 - x @ x.T


def upper(m: jax.Array) -> jax.Array:
    """The strict upper triangle of [..., n, n] as [..., n (n - 1) / 2]."""
    i, j = jnp.triu_indices(m.shape[-1], k=1)
    return m[..., i, j]


def rankdata(x: jax.Array) -> jax.Array:
    """Ranks (1-based) with ties given their average rank, along the last axis (SciPy's 'average')."""
    s = jnp.sort(x, axis=-1)
    left = jax.vmap(jnp.searchsorted, in_axes=(0, 0))(
        s.reshape(-1, s.shape[-1]), x.reshape(-1, x.shape[-1])
    )
    right = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="right"))(
        s.reshape(-1, s.shape[-1]), x.reshape(-1, x.shape[-1])
    )
    return ((left + right + 1) / 2.0).reshape(x.shape)


def _pearson(a: jax.Array, b: jax.Array) -> jax.Array:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = jnp.sqrt(jnp.sum(a * a, -1) * jnp.sum(b * b, -1))
    return jnp.where(den > 0, jnp.sum(a * b, -1) / jnp.where(den > 0, den, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames="method")
def compare_rdms(a: jax.Array, b: jax.Array, method: Method = "pearson") -> jax.Array:
    """Second-order correlation of the upper triangles of RDMs a and b (broadcast over leading axes)."""
    ua, ub = upper(jnp.asarray(a)), upper(jnp.asarray(b))
    if method == "spearman":
        ua, ub = rankdata(ua), rankdata(ub)
    elif method != "pearson":
        raise ValueError(f"unknown RSA comparison {method!r}: use 'pearson' or 'spearman'")
    return _pearson(ua, ub)
