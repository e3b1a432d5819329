"""The linear-nonlinear (LN) baseline of the static track: one linear filter per neuron.

A single linear convolution (no nonlinearity, no bias) maps the image to C maps; the shared
Gaussian readout takes a weighted sum of the C maps at each neuron's position, so every neuron's
drive is one linear filter of the image (its feature weights mixing the C shared filters,
blurred by the Gaussian during training); ELU + 1 makes it a rate. BatchNorm is optional and
off: it would keep the model linear (a fixed affine map at evaluation), but with it the LN
learned nothing from the image on the small static preset (stimulus track, 300 steps: validation
correlation 0.003 with 8 normalized maps, 0.052 with 32 maps without it).

Why the readout and not free per-neuron pixel filters: positions from cortical coordinates and
a handful of shared filters need far fewer parameters than H x W weights per neuron, and the
LN model then differs from the CNN baseline only in its core (`models.static_common`).
`regularizer()`: `gamma_input` x the Laplace penalty of the filters, as the CNN's first layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.models import regularizers
from sensorium_jax.models.geometry import SpatialLayer
from sensorium_jax.models.initializers import conv_initializer
from sensorium_jax.models.static_common import PADDINGS, StaticCore, StaticModel, conv2d
from sensorium_jax.models.static_baseline import default_config as baseline_config


def default_config() -> ml_collections.ConfigDict:
    """The LN baseline: the CNN baseline's readout, shifter and track; a one-layer linear core."""
    config = baseline_config()
    config.name = "linear_nonlinear"
    config.core = ml_collections.ConfigDict({
        "channels": 16,  # shared linear filters the readout mixes per neuron
        "kernel": 21,  # wide enough for a whole receptive field at full resolution
        # "SAME": maps keep the image's size, so neurons at the screen edges are readable.
        "padding": "SAME",
        "batch_norm": False,
        "bn_momentum": 0.1,
        "conv_init": "xavier_normal",
        "gamma_input": 6.3831,
        "input_pool": 1,
    })
    return config


class LinearCore(StaticCore):
    """One linear convolution (optionally batch-normalized, never rectified)."""

    def __init__(self, in_channels: int, core: ml_collections.ConfigDict, compute_dtype: str, *, rngs: nnx.Rngs):
        k, c = int(core.kernel), int(core.channels)
        if core.padding not in PADDINGS:
            raise ValueError(f"model.core.padding = {core.padding!r}: expected one of {', '.join(map(repr, PADDINGS))}")
        self.kernel = nnx.Param(conv_initializer(core.conv_init)(rngs.params(), (k, k, in_channels, c)))
        self.norm = nnx.BatchNorm(c, momentum=float(core.bn_momentum), epsilon=1e-5, rngs=rngs) \
            if core.batch_norm else None
        self.padding = str(core.padding)
        self.gamma_input = float(core.gamma_input)
        self.compute_dtype = jnp.dtype(compute_dtype)
        self.out_channels = c

    def spatial_layers(self) -> tuple[SpatialLayer, ...]:
        return ((int(self.kernel.shape[0]), self.padding),)

    def regularizer(self) -> jax.Array:
        """gamma_input x the Laplace penalty of the filters."""
        if not self.gamma_input:
            return jnp.zeros((), jnp.float32)
        return self.gamma_input * regularizers.laplace_l2_norm(self.kernel[...])

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dt = self.compute_dtype
        y = conv2d(x.astype(dt), self.kernel[...].astype(dt), self.padding).astype(jnp.float32)
        return y if self.norm is None else self.norm(y, use_running_average=not train)


class LinearNonlinear(StaticModel):
    """`model(batch, train)` -> positive rates [B, T, Nmax] (T = 1 for static data)."""

    @staticmethod
    def first_kernel(config: ml_collections.ConfigDict) -> int:
        return int(config.core.kernel)

    def build_core(self, config: ml_collections.ConfigDict, in_channels: int, rngs: nnx.Rngs) -> LinearCore:
        return LinearCore(in_channels, config.core, config.compute_dtype, rngs=rngs)


Model = LinearNonlinear
