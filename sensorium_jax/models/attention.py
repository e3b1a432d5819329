"""Multi-head scaled dot-product attention as one pure function, shared by the transformer cores.

`attention(q, k, v)` takes the layout of `jax.nn.dot_product_attention` ([B, L, heads, head_dim])
and runs either that fused kernel (the backend picks cuDNN's flash attention on GPU for
bfloat16/float16 inputs, XLA elsewhere) or a plain softmax attention written out here: the
plain path is the definition the fused one is checked against, and a fallback where a backend
refuses an input the fused kernel cannot take.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp

Implementation = Literal["fused", "xla", "cudnn", "plain"]
IMPLEMENTATIONS: tuple[str, ...] = ("fused", "xla", "cudnn", "plain")


def plain_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    scale: float | None = None,
) -> jax.Array:
    """softmax(q k^T * scale + bias, masked) v, the logits and the softmax in float32.

    q [B, Lq, H, D], k and v [B, Lk, H, D]; bias and mask broadcast to [B, H, Lq, Lk] (mask True
    where a query may attend). Returns [B, Lq, H, D] in q's dtype.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    implementation: Implementation = "fused",
    scale: float | None = None,
) -> jax.Array:
    """Scaled dot-product attention of q [B, Lq, H, D] over k, v [B, Lk, H, D] -> [B, Lq, H, D].

    `implementation`: "fused" (`jax.nn.dot_product_attention` with implementation=None, so the
    backend chooses: cuDNN flash attention on GPU where it applies, XLA otherwise), "xla" or
    "cudnn" (forced), or "plain" (`plain_attention`). The scale defaults to 1 / sqrt(D).
    """
    if implementation == "plain":
        return plain_attention(q, k, v, bias, mask, scale)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {implementation!r}; known: {', '.join(IMPLEMENTATIONS)}")
    backend = None if implementation == "fused" else implementation
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale, implementation=backend)
