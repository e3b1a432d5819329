"""Convolutional cores shared by all mice: video clip in, feature maps out (channels last).

The factorized 3D core stores its kernels in the 3D layout (DHWIO) whatever convolution
formulation runs them, so a checkpoint does not depend on the backend it was trained on.

Why two formulations: on CPU, XLA's 3D convolutions are slow. A (1, k, k) kernel is a 2D
convolution with the frames folded into the batch, and a (k, 1, 1) kernel is a 2D convolution
over (T, H*W); both compute exactly the same sums. Measured here (2 CPU cores, 4 clips x 30
frames of 36x64, see the model report): spatial 9x9, 3->8 channels forward 77 ms vs 597 ms
(3D), forward+backward 697 ms vs 2702 ms; temporal 9x1x1, 8->8 forward 31 ms vs 73 ms,
forward+backward 61 ms vs 444 ms; a whole 8/16/16-channel model on that batch: forward 0.22 s vs
2.3 s, forward+backward 2.3 s vs 7.9 s. On accelerators the native 3D convolution is kept (not
measured there), so the CPU choice stays out of the accelerator path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

ConvImpl = Literal["auto", "matmul", "folded2d", "3d"]

_DN3 = ("NDHWC", "DHWIO", "NDHWC")
_DN2 = ("NHWC", "HWIO", "NHWC")

Initializer = Callable[..., jax.Array]


@functools.partial(jax.jit, static_argnums=(1, 2))
def _take(flat: jax.Array, shape: tuple[int, ...], scale: float) -> jax.Array:
    return flat[: math.prod(shape)].reshape(shape) * scale


def _draw(key: jax.Array, shape: Sequence[int], scale: float, distribution: str) -> jax.Array:
    """Scaled standard normal or U(-1, 1) numbers of `shape`, cut from a power-of-two buffer.

    Why: XLA compiles one random-number kernel per shape, 1-2 s each on a busy CPU, which made
    building even a tiny model take ~25 s here; power-of-two buffers reuse a handful of kernels.
    """
    n = math.prod(shape)
    size = 1 << max(n - 1, 0).bit_length()
    if distribution == "normal":
        flat = jax.random.normal(key, (size,), jnp.float32)
    else:
        flat = jax.random.uniform(key, (size,), jnp.float32, minval=-1.0, maxval=1.0)
    return _take(flat, tuple(int(d) for d in shape), float(scale))


def lecun_normal(batch_axes: Sequence[int] = ()) -> Initializer:
    """Normal with std 1/sqrt(fan_in); fan_in = all axes but the last (output) and `batch_axes`."""

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        skip = {a % len(shape) for a in batch_axes} | {len(shape) - 1}
        fan_in = math.prod(d for i, d in enumerate(shape) if i not in skip)
        return _draw(key, shape, 1.0 / math.sqrt(max(fan_in, 1)), "normal").astype(dtype)

    return init


def uniform(limit: float) -> Initializer:
    """U(-limit, limit)."""

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return _draw(key, shape, limit, "uniform").astype(dtype)

    return init


def _spatial_padding(kernel: jax.Array, padding: str) -> list[tuple[int, int]]:
    """(H, W) padding of a (kt, kh, kw) kernel: none ("VALID") or half the kernel ("SAME")."""
    if padding == "VALID":
        return [(0, 0), (0, 0)]
    if padding != "SAME":
        raise ValueError(f"spatial padding must be 'VALID' or 'SAME', got {padding!r}")
    kh, kw = kernel.shape[1:3]
    return [((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)]


def conv3d(x: jax.Array, kernel: jax.Array, padding: str = "VALID") -> jax.Array:
    """3D convolution, x [B, T, H, W, Ci], kernel [kt, kh, kw, Ci, Co]: never padded in time,
    padded in space as `padding` says."""
    pad = [(0, 0), *_spatial_padding(kernel, padding)]
    return jax.lax.conv_general_dilated(x, kernel, (1, 1, 1), pad, dimension_numbers=_DN3)


def spatial_conv_folded(x: jax.Array, kernel: jax.Array, padding: str = "VALID") -> jax.Array:
    """(1, kh, kw) convolution as a 2D convolution with the frames folded into the batch."""
    b, t, h, w, c = x.shape
    y = jax.lax.conv_general_dilated(
        x.reshape(b * t, h, w, c), kernel[0], (1, 1), _spatial_padding(kernel, padding), dimension_numbers=_DN2
    )
    return y.reshape(b, t, *y.shape[1:])


def temporal_conv_folded(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(kt, 1, 1) convolution as a 2D convolution over (T, H*W)."""
    b, t, h, w, c = x.shape
    y = jax.lax.conv_general_dilated(
        x.reshape(b, t, h * w, c), kernel[:, 0], (1, 1), "VALID", dimension_numbers=_DN2
    )
    return y.reshape(b, y.shape[1], h, w, y.shape[-1])


def temporal_conv_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(kt, 1, 1) convolution as kt matrix products of time-shifted frames, summed.

    Why: XLA:CPU runs the (kt, 1) convolution over (T, H*W) 10-25x slower than these products
    (measured here, forward + backward of the factorized baseline's layers on 4 clips of 80
    36 x 64 frames: 20.0 s vs 1.6 s, 47.8 s vs 1.9 s, 96.4 s vs 5.5 s).
    """
    kt = kernel.shape[0]
    t = x.shape[1] - kt + 1
    return sum(jnp.einsum("bthwc,cd->bthwd", x[:, i : i + t], kernel[i, 0, 0]) for i in range(kt))


def resolve_conv_impl(impl: ConvImpl) -> str:
    """'auto' means folded 2D convolutions on CPU and native 3D ones elsewhere.

    'matmul' is not the CPU default: it wins for wide layers (the competition baseline's 32-128
    channels: 81 s against 192 s per step) but loses for narrow ones (16 channels: 0.81 s
    against 0.60 s per step).
    """
    if impl == "auto":
        return "folded2d" if jax.default_backend() == "cpu" else "3d"
    if impl not in ("matmul", "folded2d", "3d"):
        raise ValueError(f"conv_impl must be 'auto', 'matmul', 'folded2d' or '3d', got {impl!r}")
    return impl


def factorized_conv(x: jax.Array, kernel: jax.Array, impl: ConvImpl = "auto", padding: str = "VALID") -> jax.Array:
    """A 3D convolution whose kernel is (1, k, k) or (k, 1, 1), in the chosen form; never
    padded in time, padded in space as `padding` ("VALID" or "SAME") says."""
    impl = resolve_conv_impl(impl)
    if impl == "3d":
        return conv3d(x, kernel, padding)
    kt, kh, kw = kernel.shape[:3]
    if kt == 1:
        return spatial_conv_folded(x, kernel, padding)
    if kh == 1 and kw == 1:
        return temporal_conv_matmul(x, kernel) if impl == "matmul" else temporal_conv_folded(x, kernel)
    return conv3d(x, kernel, padding)


class FactorizedLayer(nnx.Module):
    """Spatial (1, k, k) conv, temporal (kt, 1, 1) conv, BatchNorm, ELU.

    Never padded in time (causal: frames are lost at the start of a clip); in space unpadded
    ("VALID", the baseline) or zero-padded to keep the frame size ("SAME").

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
        conv_impl: ConvImpl = "auto",
        bn_momentum: float = 0.9,
        spatial_padding: str = "VALID",
        rngs: nnx.Rngs,
    ):
        init = lecun_normal()
        k, kt = spatial_kernel, temporal_kernel
        self.spatial = nnx.Param(init(rngs.params(), (1, k, k, in_channels, out_channels)))
        self.temporal = nnx.Param(init(rngs.params(), (kt, 1, 1, out_channels, out_channels)))
        self.norm = nnx.BatchNorm(out_channels, momentum=bn_momentum, epsilon=1e-5, rngs=rngs)
        self.compute_dtype = compute_dtype
        self.conv_impl = conv_impl
        self.spatial_padding = spatial_padding

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dt = self.compute_dtype
        y = factorized_conv(x.astype(dt), self.spatial[...].astype(dt), self.conv_impl, self.spatial_padding)
        y = factorized_conv(y, self.temporal[...].astype(dt), self.conv_impl)
        y = self.norm(y.astype(jnp.float32), use_running_average=not train)
        return jax.nn.elu(y)


class Factorized3dCore(nnx.Module):
    """Stack of factorized layers: [B, T, H, W, Cin] -> [B, T - frames_lost, H', W', C_last]."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        spatial_kernels: Sequence[int],
        temporal_kernels: Sequence[int],
        *,
        compute_dtype: str | jnp.dtype = "float32",
        conv_impl: ConvImpl = "auto",
        bn_momentum: float = 0.9,
        spatial_padding: str = "VALID",
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        if not len(channels) == len(spatial_kernels) == len(temporal_kernels):
            raise ValueError("channels, spatial_kernels and temporal_kernels need equal lengths")
        resolve_conv_impl(conv_impl)  # fail early on a bad name
        if spatial_padding not in ("VALID", "SAME"):
            raise ValueError(f"spatial_padding must be 'VALID' or 'SAME', got {spatial_padding!r}")
        dtype = jnp.dtype(compute_dtype)
        ins = (in_channels, *channels[:-1])
        self.layers = nnx.List(
            [
                FactorizedLayer(
                    ci, co, ks, kt, compute_dtype=dtype, conv_impl=conv_impl,
                    bn_momentum=bn_momentum, spatial_padding=spatial_padding, rngs=rngs,
                )
                for ci, co, ks, kt in zip(ins, channels, spatial_kernels, temporal_kernels)
            ]
        )
        self.out_channels = int(channels[-1])
        self.spatial_kernels = tuple(int(k) for k in spatial_kernels)
        self.temporal_kernels = tuple(int(k) for k in temporal_kernels)
        self.spatial_padding = spatial_padding
        self.remat = bool(remat)

    def frames_lost(self) -> int:
        """Frames eaten by the unpadded temporal convolutions (same for any clip length)."""
        return sum(k - 1 for k in self.temporal_kernels)

    def output_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(T', H', W', C) of the feature maps for an input clip of the given size."""
        lost_s = 0 if self.spatial_padding == "SAME" else sum(k - 1 for k in self.spatial_kernels)
        return frames - self.frames_lost(), height - lost_s, width - lost_s, self.out_channels

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for layer in self.layers:
            x = run_layer(layer, x, train=train, remat=self.remat)
        return x


def run_layer(layer: nnx.Module, x: jax.Array, *, train: bool, remat: bool) -> jax.Array:
    """`layer(x, train=train)`, rematerialised in the backward pass when `remat`: its
    activations are recomputed instead of stored, trading ~1/3 more compute for memory that no
    longer grows with the layer's intermediate maps (long clips, large batches)."""
    if not remat:
        return layer(x, train=train)
    return nnx.remat(lambda module, inputs: module(inputs, train=train))(layer, x)
