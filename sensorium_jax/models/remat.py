"""Rematerialisation of a layer's activations, shared by the cores that offer it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def run_layer(layer: nnx.Module, x: jax.Array, *, train: bool, remat: bool) -> jax.Array:
    """`layer(x, train=train)`, rematerialised in the backward pass when `remat`: its
    activations are recomputed instead of stored, trading ~1/3 more compute for memory that no
    longer grows with the layer's intermediate maps (long clips, large batches).

    The layer's other state (BatchNorm statistics, dropout streams) is updated as by a plain
    call; the recomputation starts from the state before it, so it draws the same dropout
    masks and normalises with the same batch statistics."""
    if not remat:
        return layer(x, train=train)
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def pure(params: Any, x: jax.Array, rest: Any) -> tuple[jax.Array, Any]:
        module = nnx.merge(graphdef, params, rest)
        y = module(x, train=train)
        return y, nnx.state(module, nnx.Not(nnx.Param))

    y, updated = recompute_in_backward(pure)(params, x, rest)
    nnx.update(layer, updated)
    return y


def recompute_in_backward(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn(params, x, *rest)` (pure) storing only its arguments for the backward pass, which
    recomputes it once the cotangent of its (first) output exists.

    Why not `jax.checkpoint` / `nnx.remat`: they only keep the recomputation from being merged
    with the forward pass (an `optimization_barrier`, which XLA:CPU removes before scheduling);
    nothing makes it wait for the cotangent, so XLA ran every layer's recomputation right after
    the forward pass and all layers' activations were live at once: remat saved nothing
    (Dynamic-V1FM's compiled step at competition scale: 66 GiB of temporaries with it, 64 GiB
    without). Here the recomputation reads x + 0 * (one entry of the cotangent), a data
    dependency no scheduler can reorder, so layer i is recomputed only after layer i + 1's
    backward pass and one layer's activations are live at a time. (A non-finite cotangent
    makes the layer's gradients non-finite either way.)
    """

    @jax.custom_vjp
    def run(params, x, *rest):
        return fn(params, x, *rest)

    def forward(params, x, *rest):
        return fn(params, x, *rest), (params, x, *rest)

    def backward(saved, cotangent):
        params, x, *rest = saved
        first = jax.tree.leaves(cotangent)[0]
        x = x + (0 * jnp.ravel(first)[0]).astype(x.dtype)
        return jax.vjp(fn, params, x, *rest)[1](cotangent)

    run.defvjp(forward, backward)
    return run
