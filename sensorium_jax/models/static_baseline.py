"""The SENSORIUM 2022 baseline: a stacked 2D convolutional core and the Gaussian readout.

The layout follows the 2022 competition's CNN baseline (neuralpredictors' `Stacked2dCore`
with `depth_separable=True`, `FullGaussian2d` with a cortical-coordinate `grid_mean_predictor`,
`MLPShifter`):

- layer 1: a full k x k convolution (9 x 9, unpadded, no bias), BatchNorm, ELU;
- layers 2..L: depth-separable convolutions (1 x 1 channel mixing, a 7 x 7 depthwise
  convolution zero-padded to keep the map's size, 1 x 1 channel mixing; no biases), BatchNorm,
  ELU (also after the last layer: the reference's `final_nonlinearity=True`);
- the readout sees every layer's output stacked along the channels (the reference's
  `stack=None`): 4 x 64 = 256 features per position;
- `regularizer()`: `gamma_input` times the Laplace penalty of the first layer's filters
  (`regularizers.laplace_l2_norm`, the reference's `LaplaceL2norm`) plus the readout's L1.

The track (`model.track`, see `models.static_common`) decides whether behaviour enters as
input maps and whether the shifter is built. Deviation: the constant behaviour maps are scaled
by `inputs.map_scale` ("auto": 1 / k^2) where the reference feeds them unscaled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.models import kernels, regularizers
from sensorium_jax.models.geometry import SpatialLayer
from sensorium_jax.models.initializers import conv_initializer
from sensorium_jax.models.static_common import PADDINGS, StaticCore, StaticModel, conv2d


def default_config() -> ml_collections.ConfigDict:
    """Competition-scale configuration of the 2022 baseline (the reference's hyperparameters)."""
    return ml_collections.ConfigDict(
        {
            "name": "static_baseline",
            # "stimulus" (SENSORIUM: the image only) or "behavior" (SENSORIUM+: behaviour maps
            # into the core and the pupil-centre shifter); see models.static_common.
            "track": "behavior",
            # Convolutions run in this dtype; parameters and BatchNorm stay float32.
            "compute_dtype": "float32",  # or "bfloat16"
            # How the depthwise convolutions run (see sensorium_jax.models.kernels): "native"
            # (XLA's grouped convolution), "folded"/"matmul" (shifted multiply-adds) or "auto"
            # (shifts on CPU, else native). Native by measurement: a gradient of this model on 16
            # images took 3.0 s native, 4.5 s with shifts on 2 busy CPU cores (same outputs).
            "kernels": "native",
            "core": {
                "channels": 64,
                "layers": 4,
                "input_kernel": 9,
                "hidden_kernel": 7,
                # True: hidden layers are 1x1 -> depthwise kxk -> 1x1 (the 2022 baseline's);
                # False: one full kxk convolution each.
                "depth_separable": True,
                # The first convolution: "VALID" as the reference (36 x 64 -> 28 x 56 maps);
                # hidden ones are always zero-padded ("SAME").
                "input_padding": "VALID",
                # True: the readout sees all layers' maps stacked (the reference's stack=None);
                # False: the last layer's only.
                "stack_layers": True,
                # flax convention: the reference's torch momentum 0.9 is 0.1 here.
                "bn_momentum": 0.1,
                "conv_init": "xavier_normal",  # the reference's initialisation of every conv
                # Laplace smoothness of the first layer's filters, in summed-loss units.
                "gamma_input": 6.3831,
                # Spatial average pooling of the input images (2: 4x cheaper, small CPU configs).
                "input_pool": 1,
            },
            "inputs": {
                # Constant behaviour maps are multiplied by this before the first convolution;
                # "auto": 1 / k^2 for a first kernel of k x k (see inputs.map_scale).
                "map_scale": "auto",
            },
            "readout": {
                "position_inputs": 2,  # cortical coordinates used: x, y (grid_mean_predictor)
                "position_hidden": 30,
                "init_sigma": 0.1,
                "full_sigma": True,
                "neuron_chunk": 1024,
                "centered_positions": True,
                "gamma_readout": 0.0076,  # L1 on the feature weights (the 2022 baseline's)
            },
            # Built in the behaviour track only: per mouse 2 -> 5 -> 5 -> 2, tanh after each.
            "shifter": {"hidden": (5, 5), "zero_init": True},
        }
    )


class ConvBlock(nnx.Module):
    """One core layer: a full or depth-separable convolution (no bias), BatchNorm, ELU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        depth_separable: bool,
        padding: str,
        activation: bool,
        kernels_impl: str,
        compute_dtype: jnp.dtype,
        bn_momentum: float,
        conv_init: str,
        rngs: nnx.Rngs,
    ):
        init = conv_initializer(conv_init)
        if depth_separable and (padding != "SAME" or kernel % 2 == 0):
            raise ValueError(f"model.core.hidden_kernel = {kernel}: depth-separable layers need an odd kernel "
                             "(zero-padded by kernel // 2 on each side)")
        if depth_separable:
            self.filters = nnx.List([
                nnx.Param(init(rngs.params(), (1, 1, in_channels, out_channels))),
                nnx.Param(init(rngs.params(), (kernel, kernel, 1, out_channels))),
                nnx.Param(init(rngs.params(), (1, 1, out_channels, out_channels))),
            ])
        else:
            self.filters = nnx.List([nnx.Param(init(rngs.params(), (kernel, kernel, in_channels, out_channels)))])
        self.norm = nnx.BatchNorm(out_channels, momentum=bn_momentum, epsilon=1e-5, rngs=rngs)
        self.depth_separable = depth_separable
        self.padding = padding
        self.activation = activation
        self.compute_dtype = compute_dtype
        self.kernels_impl = kernels.check(kernels_impl)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dt = self.compute_dtype
        y = x.astype(dt)
        if self.depth_separable:
            into, depthwise, out = (k[...].astype(dt) for k in self.filters)
            y = conv2d(y, into, "VALID")
            y = kernels.depthwise_conv(y[:, None], depthwise[None], 1, self.kernels_impl)[:, 0]
            y = conv2d(y, out, "VALID")
        else:
            y = conv2d(y, self.filters[0][...].astype(dt), self.padding)
        y = self.norm(y.astype(jnp.float32), use_running_average=not train)
        return jax.nn.elu(y) if self.activation else y


class Stacked2dCore(StaticCore):
    """L conv blocks; the output is every layer's maps stacked (or the last layer's)."""

    def __init__(self, in_channels: int, core: ml_collections.ConfigDict, compute_dtype: str, kernels_impl: str,
                 *, rngs: nnx.Rngs):
        n, c = int(core.layers), int(core.channels)
        if n < 1:
            raise ValueError(f"model.core.layers = {n}: expected at least 1")
        if core.input_padding not in PADDINGS:
            raise ValueError(f"model.core.input_padding = {core.input_padding!r}: "
                             f"expected one of {', '.join(map(repr, PADDINGS))}")
        dtype = jnp.dtype(compute_dtype)
        sizes = (int(core.input_kernel), *(int(core.hidden_kernel),) * (n - 1))
        paddings = (str(core.input_padding), *("SAME",) * (n - 1))
        self.layers = nnx.List([
            ConvBlock(
                in_channels if i == 0 else c, c, k,
                depth_separable=bool(core.depth_separable) and i > 0, padding=p, activation=True,
                kernels_impl=kernels_impl, compute_dtype=dtype, bn_momentum=float(core.bn_momentum),
                conv_init=core.conv_init, rngs=rngs,
            )
            for i, (k, p) in enumerate(zip(sizes, paddings))
        ])
        self.layer_geometry: tuple[SpatialLayer, ...] = tuple(zip(sizes, paddings))
        self.stack_layers = bool(core.stack_layers)
        self.gamma_input = float(core.gamma_input)
        self.out_channels = c * (n if self.stack_layers else 1)

    def spatial_layers(self) -> tuple[SpatialLayer, ...]:
        return self.layer_geometry

    def regularizer(self) -> jax.Array:
        """gamma_input x the Laplace penalty of the first layer's filters (reference: `laplace()`)."""
        if not self.gamma_input:
            return jnp.zeros((), jnp.float32)
        return self.gamma_input * regularizers.laplace_l2_norm(self.layers[0].filters[0][...])

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        outputs: list[jax.Array] = []
        for layer in self.layers:
            x = layer(x, train=train)
            outputs.append(x)
        return jnp.concatenate(outputs, axis=-1) if self.stack_layers else x


class StaticBaseline(StaticModel):
    """`model(batch, train)` -> positive rates [B, T, Nmax] (T = 1 for static data)."""

    @staticmethod
    def first_kernel(config: ml_collections.ConfigDict) -> int:
        return int(config.core.input_kernel)

    def build_core(self, config: ml_collections.ConfigDict, in_channels: int, rngs: nnx.Rngs) -> Stacked2dCore:
        return Stacked2dCore(in_channels, config.core, config.compute_dtype, config.kernels, rngs=rngs)


Model = StaticBaseline

