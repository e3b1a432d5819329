"""DwiseNeuro's core: its building blocks (positional encoding, parameter-free shortcuts,
DropPath, pointwise and depthwise convolutions, squeeze-excitation), the factorized
inverted-residual block and the core that stacks them (see `sensorium_jax.models.dwiseneuro`)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sensorium_jax.models import kernels
from sensorium_jax.models.remat import run_layer
from sensorium_jax.models.initializers import lecun_normal


def positional_encoding_3d(t: int, h: int, w: int, channels: int) -> np.ndarray:
    """Fixed 3D sinusoidal encoding [t, h, w, channels]: the channels are split evenly among the
    t, h and w axes (2 * ceil(C / 6) each, the surplus cut off at the end); per axis the sines
    of position * 10000^(-2i / d) for all i, then the cosines."""
    d = 2 * math.ceil(channels / 6)
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, d, 2, dtype=np.float64) / d)

    def axis(n: int) -> np.ndarray:
        angles = np.arange(n, dtype=np.float64)[:, None] * inv_freq[None]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)

    emb = np.zeros((t, h, w, 3 * d), np.float64)
    emb[..., :d] = axis(t)[:, None, None]
    emb[..., d : 2 * d] = axis(h)[None, :, None]
    emb[..., 2 * d :] = axis(w)[None, None, :]
    return emb[..., :channels].astype(np.float32)


def repeat_channels(x: jax.Array, out_channels: int, mode: str = "tile") -> jax.Array:
    """[..., C] -> [..., out_channels], out_channels a multiple of C: "tile" (c0, c1, ..., c0,
    c1, ...) or "interleave" (c0, c0, c1, c1, ...)."""
    c = x.shape[-1]
    if out_channels == c:
        return x
    if out_channels % c:
        raise ValueError(f"the shortcut repeats channels: {out_channels} is not a multiple of {c}")
    if mode == "tile":
        return jnp.tile(x, (1,) * (x.ndim - 1) + (out_channels // c,))
    if mode == "interleave":
        return jnp.repeat(x, out_channels // c, axis=-1)
    raise ValueError(f"channel repeat mode must be 'tile' or 'interleave', got {mode!r}")


def downsample(x: jax.Array, stride: int, mode: str = "nearest") -> jax.Array:
    """[..., H, W, C] -> [..., ceil(H / stride), ceil(W / stride), C] (the strided
    convolution's size): "nearest" (nearest interpolation to that size: source index
    floor(i * H / H_out)) or "average" (average pooling, edge-padded to a multiple of stride)."""
    if stride == 1:
        return x
    *lead, h, w, c = x.shape
    ho, wo = -(-h // stride), -(-w // stride)
    if mode == "nearest":
        rows = np.minimum(np.floor(np.arange(ho) * (h / ho)).astype(np.int64), h - 1)
        cols = np.minimum(np.floor(np.arange(wo) * (w / wo)).astype(np.int64), w - 1)
        return jnp.take(jnp.take(x, rows, axis=-3), cols, axis=-2)
    if mode != "average":
        raise ValueError(f"downsample mode must be 'nearest' or 'average', got {mode!r}")
    ph, pw = ho * stride - h, wo * stride - w
    if ph or pw:
        x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, ph), (0, pw), (0, 0)], mode="edge")
    return x.reshape(*lead, ho, stride, wo, stride, c).mean(axis=(-4, -2))


def shortcut(x: jax.Array, out_channels: int, stride: int, downsample_mode: str = "nearest",
             repeat_mode: str = "tile") -> jax.Array:
    """Parameter-free shortcut of [..., H, W, C]: spatial downsampling by `stride`, then the
    channels repeated to `out_channels`."""
    return repeat_channels(downsample(x, stride, downsample_mode), out_channels, repeat_mode)


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """ShuffleNet channel shuffle of [..., C]: (g, C/g) -> (C/g, g)."""
    *lead, c = x.shape
    return jnp.swapaxes(x.reshape(*lead, groups, c // groups), -1, -2).reshape(*lead, c)


class DropPath(nnx.Module):
    """Stochastic depth: in training, drops the whole residual branch of a sample with
    probability `rate` (survivors scaled by 1 / (1 - rate)); identity in evaluation. Holds a
    fork of the 'dropout' stream, like nnx.Dropout."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.rate = float(rate)
        self.rngs = rngs["dropout"].fork() if self.rate > 0 else nnx.data(None)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class PointwiseConv(nnx.Module):
    """1x1x1 convolution (a matmul over the channel axis); no bias (BatchNorm follows)."""

    def __init__(self, in_channels: int, out_channels: int, *, compute_dtype: jnp.dtype, rngs: nnx.Rngs):
        self.kernel = nnx.Param(lecun_normal()(rngs.params(), (in_channels, out_channels)))
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.compute_dtype
        return jnp.einsum("...c,cd->...d", x.astype(dt), self.kernel[...].astype(dt))

class DepthwiseConv(nnx.Module):
    """Depthwise (1, k, k) spatial (stride s, padding k // 2) or (k, 1, 1) temporal (zero "SAME"
    padding: keeps the length) convolution of [B, T, H, W, C], in the form `kernels_impl` names
    (`kernels.depthwise_conv`). Kernel [kt, kh, kw, 1, C]; no bias."""

    def __init__(self, channels: int, kernel: tuple[int, int, int], stride: int = 1, *,
                 compute_dtype: jnp.dtype, kernels_impl: str, rngs: nnx.Rngs):
        kt, kh, kw = kernel
        if kt != 1 and (kh, kw) != (1, 1):
            raise ValueError(f"depthwise kernels are (1, k, k) or (k, 1, 1), got {kernel}")
        if kt != 1 and stride != 1:
            raise ValueError("temporal depthwise convolutions have no stride")
        self.kernel = nnx.Param(lecun_normal()(rngs.params(), (kt, kh, kw, 1, channels)))
        self.stride = int(stride)
        self.compute_dtype = compute_dtype
        self.kernels = kernels.check(kernels_impl)

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.compute_dtype
        return kernels.depthwise_conv(x.astype(dt), self.kernel[...].astype(dt), self.stride, self.kernels)


class SqueezeExcite(nnx.Module):
    """Global average over (T, H, W) -> dense C -> C // r, SiLU -> dense -> C, sigmoid gate."""

    def __init__(self, channels: int, reduce_ratio: int, *, compute_dtype: jnp.dtype, rngs: nnx.Rngs):
        hidden = max(1, channels // reduce_ratio)
        self.w1 = nnx.Param(lecun_normal()(rngs.params(), (channels, hidden)))
        self.b1 = nnx.Param(jnp.zeros((hidden,), jnp.float32))
        self.w2 = nnx.Param(lecun_normal()(rngs.params(), (hidden, channels)))
        self.b2 = nnx.Param(jnp.zeros((channels,), jnp.float32))
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.compute_dtype
        s = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))  # [B, C]
        s = jax.nn.silu(s.astype(dt) @ self.w1[...].astype(dt) + self.b1[...].astype(dt))
        gate = jax.nn.sigmoid(s @ self.w2[...].astype(dt) + self.b2[...].astype(dt))
        return x * gate[:, None, None, None, :].astype(x.dtype)


def batch_norm(channels: int, momentum: float, epsilon: float, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """BatchNorm over the last axis with the config's momentum and epsilon."""
    return nnx.BatchNorm(channels, momentum=momentum, epsilon=epsilon, rngs=rngs)



class InvertedResidualBlock(nnx.Module):
    """Factorized inverted residual: + positional encoding, expand (1x1x1, BN, SiLU), depthwise
    spatial (BN, SiLU), depthwise temporal (BN, SiLU), squeeze-excitation, project (1x1x1, BN),
    DropPath, + parameter-free shortcut of the encoded input (then BN, with `shortcut_norm`:
    the reference normalises every block's shortcut, resized or not)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        expansion_ratio: int,
        spatial_kernel: int,
        temporal_kernel: int,
        se_reduce_ratio: int,
        drop_path_rate: float,
        compute_dtype: jnp.dtype,
        bn_momentum: float,
        bn_epsilon: float,
        shortcut_downsample: str = "nearest",
        shortcut_repeat: str = "tile",
        shortcut_norm: bool = True,
        kernels_impl: str,
        rngs: nnx.Rngs,
    ):
        if out_channels % in_channels:
            raise ValueError(f"a block widens by an integer factor, got {in_channels} -> {out_channels}")
        mid = in_channels * expansion_ratio
        dt = compute_dtype
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, int(stride)
        self.expand = PointwiseConv(in_channels, mid, compute_dtype=dt, rngs=rngs)
        self.expand_norm = batch_norm(mid, bn_momentum, bn_epsilon, rngs)
        self.spatial = DepthwiseConv(
            mid, (1, spatial_kernel, spatial_kernel), stride, compute_dtype=dt, kernels_impl=kernels_impl, rngs=rngs
        )
        self.spatial_norm = batch_norm(mid, bn_momentum, bn_epsilon, rngs)
        self.temporal = DepthwiseConv(
            mid, (temporal_kernel, 1, 1), compute_dtype=dt, kernels_impl=kernels_impl, rngs=rngs
        )
        self.temporal_norm = batch_norm(mid, bn_momentum, bn_epsilon, rngs)
        self.se = SqueezeExcite(mid, se_reduce_ratio, compute_dtype=dt, rngs=rngs)
        self.project = PointwiseConv(mid, out_channels, compute_dtype=dt, rngs=rngs)
        self.project_norm = batch_norm(out_channels, bn_momentum, bn_epsilon, rngs)
        self.drop_path = DropPath(drop_path_rate, rngs=rngs)
        self.shortcut_modes = (str(shortcut_downsample), str(shortcut_repeat))
        self.shortcut_norm = (batch_norm(out_channels, bn_momentum, bn_epsilon, rngs) if shortcut_norm
                              else nnx.data(None))

    def skip(self, x: jax.Array, *, train: bool) -> jax.Array:
        """The shortcut: resized, channels repeated, then BatchNorm'd when the block has one."""
        y = shortcut(x, self.out_channels, self.stride, *self.shortcut_modes)
        if self.shortcut_norm is None:
            return y
        return self.shortcut_norm(y.astype(jnp.float32), use_running_average=not train)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        ura = not train
        _, t, h, w, c = x.shape
        x = x + jnp.asarray(positional_encoding_3d(t, h, w, c))
        y = jax.nn.silu(self.expand_norm(self.expand(x).astype(jnp.float32), use_running_average=ura))
        y = jax.nn.silu(self.spatial_norm(self.spatial(y).astype(jnp.float32), use_running_average=ura))
        y = jax.nn.silu(self.temporal_norm(self.temporal(y).astype(jnp.float32), use_running_average=ura))
        y = self.se(y)
        y = self.project_norm(self.project(y).astype(jnp.float32), use_running_average=ura)
        return self.drop_path(y, train=train) + self.skip(x, train=train)


def block_widths(stem: int, channels: tuple[int, ...], layout: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(in, out) channels of each block. "next": block i maps channels[i] -> channels[i + 1] (the
    last keeps its width), so a block widens before the next one strides, as the reference
    builds them; "own": block i maps the previous width (the stem's first) to channels[i]."""
    if not channels:
        return (), ()
    if layout == "next":
        if stem != channels[0]:
            raise ValueError(f'blocks.layout "next" needs stem.channels == blocks.channels[0], got {stem} '
                             f'and {channels[0]}')
        return tuple(channels), (*channels[1:], channels[-1])
    if layout == "own":
        return (stem, *channels[:-1]), tuple(channels)
    raise ValueError(f'blocks.layout must be "next" or "own", got {layout!r}')


class Core(nnx.Module):
    """Stem (1x1x1 conv + BN) and inverted-residual blocks, then a spatial global average:
    [B, T, H, W, Cin] -> [B, T, C_last]."""

    def __init__(self, in_channels: int, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        dt = jnp.dtype(config.compute_dtype)
        bc = config.blocks
        channels, strides = tuple(bc.channels), tuple(bc.spatial_strides)
        if len(channels) != len(strides):
            raise ValueError("blocks.channels and blocks.spatial_strides need equal lengths")
        stem = int(config.stem.channels)
        ins, outs = block_widths(stem, channels, str(bc.layout))
        self.stem = PointwiseConv(in_channels, stem, compute_dtype=dt, rngs=rngs)
        self.stem_norm = batch_norm(stem, config.bn_momentum, config.bn_epsilon, rngs)
        rates = [float(config.drop_path_rate) * i / len(channels) for i in range(len(channels))]
        self.blocks = nnx.List(
            [
                InvertedResidualBlock(
                    ci, co, stride=s, expansion_ratio=int(bc.expansion_ratio),
                    spatial_kernel=int(bc.spatial_kernel), temporal_kernel=int(bc.temporal_kernel),
                    se_reduce_ratio=int(bc.se_reduce_ratio), drop_path_rate=float(r), compute_dtype=dt,
                    bn_momentum=config.bn_momentum, bn_epsilon=config.bn_epsilon,
                    shortcut_downsample=bc.shortcut_downsample, shortcut_repeat=bc.shortcut_repeat,
                    shortcut_norm=bool(bc.shortcut_norm), kernels_impl=config.kernels, rngs=rngs,
                )
                for ci, co, s, r in zip(ins, outs, strides, rates)
            ]
        )
        self.out_channels = int(channels[-1]) if channels else stem
        self.remat = bool(config.remat)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = self.stem_norm(self.stem(x).astype(jnp.float32), use_running_average=not train)
        for block in self.blocks:
            x = run_layer(block, x, train=train, remat=self.remat)
        return jnp.mean(x.astype(jnp.float32), axis=(2, 3))
