"""Per-mouse small MLPs stored as one stack, and the eye-position shifter built from them.

Stacking (weights [M, in, out]) instead of one module per mouse keeps a single compiled
function for any mix of mice in a batch: each example gathers its mouse's weights by id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sensorium_jax.models.initializers import lecun_normal


class StackedMLP(nnx.Module):
    """M independent MLPs of identical shape, one per mouse.

    `features` lists the layer widths including input and output, e.g. (2, 5, 5, 2).
    """

    def __init__(
        self,
        n_stack: int,
        features: Sequence[int],
        *,
        hidden_activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
        final_activation: Callable[[jax.Array], jax.Array] | None = jnp.tanh,
        zero_last_layer: bool = False,
        rngs: nnx.Rngs,
    ):
        init = lecun_normal(batch_axes=(0,))
        self.kernels = nnx.List(
            [nnx.Param(init(rngs.params(), (n_stack, a, b))) for a, b in zip(features, features[1:])]
        )
        if zero_last_layer:  # outputs start at final_activation(0) for every input
            self.kernels[-1][...] = jnp.zeros_like(self.kernels[-1][...])
        self.biases = nnx.List(
            [nnx.Param(jnp.zeros((n_stack, b), jnp.float32)) for b in features[1:]]
        )
        self.hidden_activation = hidden_activation
        self.final_activation = final_activation

    def _run(self, x: jax.Array, select: Callable[[jax.Array], jax.Array]) -> jax.Array:
        n = len(self.kernels)
        for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
            kk, bb = select(k[...]), select(b[...])  # [S, in, out], [S, out]
            x = jnp.einsum("s...i,sio->s...o", x, kk) + bb.reshape(bb.shape[0], *(1,) * (x.ndim - 2), -1)
            if i < n - 1:
                x = self.hidden_activation(x)
            elif self.final_activation is not None:
                x = self.final_activation(x)
        return x

    def __call__(self, x: jax.Array, index: jax.Array) -> jax.Array:
        """x [B, ..., in] with example b run through MLP number index[b]."""
        return self._run(x, lambda p: p[index])

    def all(self, x: jax.Array) -> jax.Array:
        """x [M, ..., in] with row m run through MLP number m."""
        return self._run(x, lambda p: p)


class MLPShifter(nnx.Module):
    """Pupil center -> shift of every readout position (same shift for all neurons of a frame).

    The baseline's shifter: per mouse, 2 -> 5 -> 5 -> 2 with tanh after every layer, so the
    shift lies in [-1, 1] grid units.
    """

    def __init__(self, n_mice: int, hidden: Sequence[int] = (5, 5), *, zero_init: bool = False, rngs: nnx.Rngs):
        # zero_init: no shift until learned (a random MLP moves every position by up to ~0.5)
        self.mlp = StackedMLP(
            n_mice, (2, *hidden, 2), hidden_activation=jnp.tanh, final_activation=jnp.tanh,
            zero_last_layer=zero_init, rngs=rngs,
        )

    def __call__(self, pupil_center: jax.Array, mouse: jax.Array) -> jax.Array:
        """pupil_center [B, T, 2] (normalized), mouse [B] -> shift [B, T, 2] as (x, y)."""
        return self.mlp(pupil_center.astype(jnp.float32), mouse)
