"""Rematerialisation of a layer's activations, shared by the cores that offer it."""

from __future__ import annotations

import jax
from flax import nnx


def run_layer(layer: nnx.Module, x: jax.Array, *, train: bool, remat: bool) -> jax.Array:
    """`layer(x, train=train)`, rematerialised in the backward pass when `remat`: its
    activations are recomputed instead of stored, trading ~1/3 more compute for memory that no
    longer grows with the layer's intermediate maps (long clips, large batches)."""
    if not remat:
        return layer(x, train=train)
    return nnx.remat(lambda module, inputs: module(inputs, train=train))(layer, x)
