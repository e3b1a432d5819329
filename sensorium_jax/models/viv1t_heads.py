"""The per-mouse behaviour encoder of ViV1T's readout.

The reference's Gaussian readout (github.com/bryanlimy/ViV1T, `readout/gaussian2d.py`) adds an
encoding of the frame's behaviour and pupil center to the features it sampled, before the
per-neuron feature weights: per mouse, Linear(4 -> C), LayerNorm, GELU, dropout,
Linear(C -> C), tanh. The encoding is the same for every neuron of a frame, so it adds
`encoding . w_n` to neuron n's output; it is computed here, apart from the shared readout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sensorium_jax.models.initializers import uniform
from sensorium_jax.models.viv1t_blocks import LAYER_NORM_EPS


def torch_linear(n_stack: int, fan_in: int, fan_out: int, rngs: nnx.Rngs) -> tuple[nnx.Param, nnx.Param]:
    """Stacked [M, in, out] kernel and [M, out] bias drawn as torch's nn.Linear default
    (U(-1/sqrt(in), 1/sqrt(in)) for both), which the reference's readout keeps."""
    limit = 1.0 / fan_in**0.5
    return (nnx.Param(uniform(limit)(rngs.params(), (n_stack, fan_in, fan_out))),
            nnx.Param(uniform(limit)(rngs.params(), (n_stack, fan_out))))


class BehaviorEncoder(nnx.Module):
    """[B, T, 4] (behaviour, pupil center) of mouse [B] -> [B, T, C] in (-1, 1), per mouse."""

    def __init__(self, n_mice: int, in_features: int, channels: int, dropout: float, *, rngs: nnx.Rngs):
        self.kernel1, self.bias1 = torch_linear(n_mice, in_features, channels, rngs)
        self.norm_scale = nnx.Param(jnp.ones((n_mice, channels), jnp.float32))
        self.norm_bias = nnx.Param(jnp.zeros((n_mice, channels), jnp.float32))
        self.kernel2, self.bias2 = torch_linear(n_mice, channels, channels, rngs)
        self.dropout = nnx.Dropout(float(dropout), rngs=rngs)

    def __call__(self, states: jax.Array, mouse: jax.Array, *, train: bool) -> jax.Array:
        states = states.astype(jnp.float32)
        h = jnp.einsum("bti,bio->bto", states, self.kernel1[...][mouse]) + self.bias1[...][mouse][:, None]
        mean = jnp.mean(h, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
        h = (h - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS)
        h = h * self.norm_scale[...][mouse][:, None] + self.norm_bias[...][mouse][:, None]
        h = self.dropout(jax.nn.gelu(h, approximate=False), deterministic=not train)
        h = jnp.einsum("bti,bio->bto", h, self.kernel2[...][mouse]) + self.bias2[...][mouse][:, None]
        return jnp.tanh(h)
