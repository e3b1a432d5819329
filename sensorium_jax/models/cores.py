"""The factorized 3D core shared by all mice: video clip in, feature maps out (channels last).

Its kernels are stored in the 3D layout (DHWIO) whatever form runs them (`kernels.factorized_conv`),
so a checkpoint does not depend on the backend it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sensorium_jax.models import kernels
from sensorium_jax.models.geometry import SpatialLayer
from sensorium_jax.models import regularizers
from sensorium_jax.models.initializers import conv_initializer
from sensorium_jax.models.remat import run_layer


class FactorizedLayer(nnx.Module):
    """Spatial (1, k, k) conv, temporal (kt, 1, 1) conv, BatchNorm, ELU.

    Never padded in time (causal: frames are lost at the start of a clip); in space unpadded
    ("VALID", the baseline) or zero-padded to keep the frame size ("SAME"). `bn_momentum` is
    flax's (the running statistics keep that fraction per step): the reference's 0.7 in
    torch's convention is 0.3 here. `conv_init` starts both convolutions (the reference's:
Xavier-normal, gain 1).

    The convolutions carry no bias: BatchNorm's shift follows and would absorb it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_kernel: int,
        temporal_kernel: int,
        *,
        compute_dtype: jnp.dtype = jnp.float32,
        kernels_impl: str,
        bn_momentum: float = 0.3,
        spatial_padding: str = "VALID",
        conv_init: str = "xavier_normal",
        rngs: nnx.Rngs,
    ):
        init = conv_initializer(conv_init)
        k, kt = spatial_kernel, temporal_kernel
        self.spatial = nnx.Param(init(rngs.params(), (1, k, k, in_channels, out_channels)))
        self.temporal = nnx.Param(init(rngs.params(), (kt, 1, 1, out_channels, out_channels)))
        self.norm = nnx.BatchNorm(out_channels, momentum=bn_momentum, epsilon=1e-5, rngs=rngs)
        self.compute_dtype = compute_dtype
        self.kernels = kernels.check(kernels_impl)
        self.spatial_padding = spatial_padding

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dt = self.compute_dtype
        y = kernels.factorized_conv(x.astype(dt), self.spatial[...].astype(dt), self.kernels, self.spatial_padding)
        y = kernels.factorized_conv(y, self.temporal[...].astype(dt), self.kernels)
        y = self.norm(y.astype(jnp.float32), use_running_average=not train)
        return jax.nn.elu(y)


class Factorized3dCore(nnx.Module):
    """Stack of factorized layers: [B, T, H, W, Cin] -> [B, T - frames_lost, H', W', C_last].

    `gamma_input_spatial` / `gamma_input_temporal` weigh the smoothness penalties of the first
    layer's spatial and temporal filters (`regularizer`), as the reference core's.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        spatial_kernels: Sequence[int],
        temporal_kernels: Sequence[int],
        *,
        compute_dtype: str | jnp.dtype = "float32",
        kernels_impl: str,
        bn_momentum: float = 0.3,
        spatial_padding: str = "VALID",
        remat: bool = False,
        conv_init: str = "xavier_normal",
        gamma_input_spatial: float = 0.0,
        gamma_input_temporal: float = 0.0,
        rngs: nnx.Rngs,
    ):
        if not len(channels) == len(spatial_kernels) == len(temporal_kernels):
            raise ValueError("channels, spatial_kernels and temporal_kernels need equal lengths")
        kernels.check(kernels_impl)  # fail early on a bad name
        if spatial_padding not in ("VALID", "SAME"):
            raise ValueError(f"spatial_padding must be 'VALID' or 'SAME', got {spatial_padding!r}")
        dtype = jnp.dtype(compute_dtype)
        ins = (in_channels, *channels[:-1])
        self.layers = nnx.List(
            [
                FactorizedLayer(
                    ci, co, ks, kt, compute_dtype=dtype, kernels_impl=kernels_impl,
                    bn_momentum=bn_momentum, spatial_padding=spatial_padding, conv_init=conv_init,
                    rngs=rngs,
                )
                for ci, co, ks, kt in zip(ins, channels, spatial_kernels, temporal_kernels)
            ]
        )
        self.out_channels = int(channels[-1])
        self.spatial_kernels = tuple(int(k) for k in spatial_kernels)
        self.temporal_kernels = tuple(int(k) for k in temporal_kernels)
        self.spatial_padding = spatial_padding
        self.remat = bool(remat)
        self.gamma_input_spatial = float(gamma_input_spatial)
        self.gamma_input_temporal = float(gamma_input_temporal)

    def frames_lost(self) -> int:
        """Frames eaten by the unpadded temporal convolutions (same for any clip length)."""
        return sum(k - 1 for k in self.temporal_kernels)

    def spatial_layers(self) -> tuple[SpatialLayer, ...]:
        """The stride-1 spatial convolutions between the input and the feature map."""
        return tuple((k, self.spatial_padding) for k in self.spatial_kernels)

    def output_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(T', H', W', C) of the feature maps for an input clip of the given size."""
        lost_s = 0 if self.spatial_padding == "SAME" else sum(k - 1 for k in self.spatial_kernels)
        return frames - self.frames_lost(), height - lost_s, width - lost_s, self.out_channels

    def regularizer(self) -> jax.Array:
        """gamma_spatial * LaplaceL2norm(first spatial filters) + gamma_temporal *
        DepthLaplaceL21d(first temporal filters); a zero weight skips its term."""
        first = self.layers[0]
        penalty = jnp.zeros((), jnp.float32)
        if self.gamma_input_spatial:
            penalty += self.gamma_input_spatial * regularizers.laplace_l2_norm(first.spatial[...])
        if self.gamma_input_temporal:
            penalty += self.gamma_input_temporal * regularizers.temporal_laplace_l2_norm(first.temporal[...])
        return penalty

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for layer in self.layers:
            x = run_layer(layer, x, train=train, remat=self.remat)
        return x
