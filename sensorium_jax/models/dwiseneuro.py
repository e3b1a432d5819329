"""DwiseNeuro (first place of SENSORIUM 2023) as an NNX module, from the paper's description.

Layout of the network (every number comes from the config):

- input: a fixed-length clip of `clip_length` frames; every `temporal_stride`-th frame is kept
  and zero padded (centred) to `frame_size`; behaviour and pupil center join the video as
  constant maps (5 channels with 2 behaviour dimensions);
- core: a 1x1x1 stem conv + BatchNorm, then factorized inverted-residual blocks (3D sinusoidal
  positional encoding, 1x1x1 expansion, depthwise (1, 3, 3) spatial and (5, 1, 1) temporal
  convolutions, squeeze-excitation, 1x1x1 projection, DropPath, a parameter-free shortcut), and
  a spatial global average pool -> [B, T', C];
- cortex: grouped 1x1 linear layers widening the features (BatchNorm, SiLU, channel shuffle,
  channel-repeating shortcut with stochastic depth);
- readout per mouse: dropout, a grouped 1x1 linear layer to the mouse's neurons, softplus with
  a small beta.

The core is not causal: temporal convolutions are zero padded and keep the length, so every
frame of the clip gets a prediction (`frames_lost` is 0); each processed step is repeated
`temporal_stride` times to cover the frames it skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models.cores import lecun_normal, run_layer
from sensorium_jax.models.factorized import core_input
from sensorium_jax.models.readouts import ReadoutConstant
from sensorium_jax.models.registry import register_model

_DN2 = ("NHWC", "HWIO", "NHWC")


def dwiseneuro_config() -> ml_collections.ConfigDict:
    """Competition-scale configuration (the first-place solution of SENSORIUM 2023)."""
    return ml_collections.ConfigDict(
        {
            "name": "dwiseneuro",
            # Convolutions and linear layers run in this dtype; parameters and BatchNorm stay
            # float32.
            "compute_dtype": "float32",  # or "bfloat16"
            "clip_length": 32,  # fixed input length in frames
            "temporal_stride": 2,  # every 2nd frame is processed (32 -> 16 steps)
            "frame_size": (64, 64),  # frames are zero padded (centred) to this size
            "bn_momentum": 0.9,  # flax convention (torch's momentum 0.1)
            "bn_epsilon": 1e-5,
            # Stochastic depth of the core blocks: block i of n drops its path with rate
            # drop_path_rate * i / n (0 for the first block, the full rate never reached).
            "drop_path_rate": 0.1,
            # Recompute each block's activations in the backward pass instead of storing them
            # (the expanded 6x maps dominate memory), ~1/3 more compute.
            "remat": False,
            "inputs": {"behavior": True, "pupil_center": True, "map_scale": 1.0},
            "stem": {"channels": 64},
            "blocks": {
                "channels": (64, 64, 64, 64, 128, 128, 128, 256, 256),
                "spatial_strides": (2, 1, 1, 1, 2, 1, 1, 2, 1),
                "expansion_ratio": 6,
                "spatial_kernel": 3,
                "temporal_kernel": 5,
                "se_reduce_ratio": 32,  # squeeze-excitation hidden = expanded channels // 32
                # Parameter-free shortcut when a block changes the size: "nearest"
                # interpolation or "average" pooling spatially; channels "tile"d (cyclic
                # repeat: c0, c1, ..., c0, c1, ...) or "interleave"d (c0, c0, c1, c1, ...).
                "shortcut_downsample": "nearest",
                "shortcut_repeat": "tile",
                # Depthwise convolutions: "native" grouped convolutions, "shifts" (shifted
                # multiply-adds, the same sums) or "auto" (shifts on CPU only).
                "depthwise_impl": "auto",
            },
            "cortex": {
                "channels": (1024, 2048, 4096),
                "groups": 2,
                "drop_path_rate": 0.1,  # stochastic depth of every cortex layer
                # False: the parameter-free shortcut the paper describes; True adds a
                # BatchNorm on the channel-repeated shortcut.
                "shortcut_norm": False,
                "shortcut_repeat": "tile",
            },
            "readout": {
                "groups": 2,
                "dropout": 0.4,
                # Drop whole feature channels over all time steps (the same channels for
                # every frame of a clip); False drops single entries.
                "channel_dropout": True,
                "softplus_beta": 0.07,
                "learn_beta": False,
            },
        }
    )


# --------------------------------------------------------------------------- small pieces


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


def softplus_beta(x: jax.Array, beta: float | jax.Array) -> jax.Array:
    """log(1 + exp(beta * x)) / beta, numerically stable."""
    return jax.nn.softplus(beta * x) / beta


def inverse_softplus_beta(rate: np.ndarray, beta: float, floor: float = 1e-3) -> np.ndarray:
    """x with softplus_beta(x, beta) == rate (rates clipped at `floor`), stable for small beta * rate."""
    r = beta * np.maximum(np.asarray(rate, np.float64), floor)
    return ((r + np.log(-np.expm1(-r))) / beta).astype(np.float32)


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


def resolve_depthwise_impl(impl: str) -> str:
    """'auto': shifted multiply-adds on CPU (XLA's CPU grouped convolutions are slow: a small
    DwiseNeuro step took 13 s with them), the native grouped convolution elsewhere."""
    if impl == "auto":
        return "shifts" if jax.default_backend() == "cpu" else "native"
    if impl not in ("shifts", "native"):
        raise ValueError(f"depthwise_impl must be 'auto', 'shifts' or 'native', got {impl!r}")
    return impl


def depthwise_shifts(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """The depthwise convolution of `DepthwiseConv` as a sum over the kernel's taps of shifted
    (strided) slices of the zero-padded input times a per-channel weight: the same sums as the
    grouped convolution, in elementwise operations XLA runs well on CPU."""
    kt, kh, kw, _, c = kernel.shape
    b, t, h, w, _ = x.shape
    pad_t = ((kt - 1) // 2, kt // 2)
    xp = jnp.pad(x, ((0, 0), pad_t, (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    ho, wo = (h + 2 * (kh // 2) - kh) // stride + 1, (w + 2 * (kw // 2) - kw) // stride + 1
    out = None
    for dt_ in range(kt):
        for dy in range(kh):
            for dx in range(kw):
                tap = jax.lax.slice(
                    xp, (0, dt_, dy, dx, 0),
                    (b, dt_ + t, dy + (ho - 1) * stride + 1, dx + (wo - 1) * stride + 1, c),
                    (1, 1, stride, stride, 1),
                )
                term = tap * kernel[dt_, dy, dx, 0]
                out = term if out is None else out + term
    return out


class DepthwiseConv(nnx.Module):
    """Depthwise (1, k, k) spatial (stride s, padding k // 2) or (k, 1, 1) temporal (zero "SAME"
    padding: keeps the length) convolution of [B, T, H, W, C]: natively as a grouped 2D
    convolution (frames folded into the batch, or over (T, H * W)) or as shifted multiply-adds
    (`impl`). Kernel [kt, kh, kw, 1, C]; no bias."""

    def __init__(self, channels: int, kernel: tuple[int, int, int], stride: int = 1, *,
                 compute_dtype: jnp.dtype, impl: str = "auto", rngs: nnx.Rngs):
        kt, kh, kw = kernel
        if kt != 1 and (kh, kw) != (1, 1):
            raise ValueError(f"depthwise kernels are (1, k, k) or (k, 1, 1), got {kernel}")
        if kt != 1 and stride != 1:
            raise ValueError("temporal depthwise convolutions have no stride")
        self.kernel = nnx.Param(lecun_normal()(rngs.params(), (kt, kh, kw, 1, channels)))
        self.stride = int(stride)
        self.compute_dtype = compute_dtype
        self.impl = resolve_depthwise_impl(impl)

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.compute_dtype
        kernel = self.kernel[...].astype(dt)
        kt, kh, kw, _, c = kernel.shape
        b, t, h, w, _ = x.shape
        x = x.astype(dt)
        if self.impl == "shifts":
            return depthwise_shifts(x, kernel, self.stride)
        if kt == 1:
            y = jax.lax.conv_general_dilated(
                x.reshape(b * t, h, w, c), kernel[0], (self.stride, self.stride),
                [(kh // 2, kh // 2), (kw // 2, kw // 2)], dimension_numbers=_DN2, feature_group_count=c,
            )
            return y.reshape(b, t, *y.shape[1:])
        y = jax.lax.conv_general_dilated(
            x.reshape(b, t, h * w, c), kernel[:, 0], (1, 1), [((kt - 1) // 2, kt // 2), (0, 0)],
            dimension_numbers=_DN2, feature_group_count=c,
        )
        return y.reshape(b, t, h, w, c)


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


def _bn(channels: int, momentum: float, epsilon: float, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(channels, momentum=momentum, epsilon=epsilon, rngs=rngs)


# --------------------------------------------------------------------------- modules


class InvertedResidualBlock(nnx.Module):
    """Factorized inverted residual: + positional encoding, expand (1x1x1, BN, SiLU), depthwise
    spatial (BN, SiLU), depthwise temporal (BN, SiLU), squeeze-excitation, project (1x1x1, BN),
    DropPath, + parameter-free shortcut of the encoded input."""

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
        depthwise_impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        if out_channels % in_channels:
            raise ValueError(f"a block widens by an integer factor, got {in_channels} -> {out_channels}")
        mid = in_channels * expansion_ratio
        dt = compute_dtype
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, int(stride)
        self.expand = PointwiseConv(in_channels, mid, compute_dtype=dt, rngs=rngs)
        self.expand_norm = _bn(mid, bn_momentum, bn_epsilon, rngs)
        self.spatial = DepthwiseConv(
            mid, (1, spatial_kernel, spatial_kernel), stride, compute_dtype=dt, impl=depthwise_impl, rngs=rngs
        )
        self.spatial_norm = _bn(mid, bn_momentum, bn_epsilon, rngs)
        self.temporal = DepthwiseConv(mid, (temporal_kernel, 1, 1), compute_dtype=dt, impl=depthwise_impl, rngs=rngs)
        self.temporal_norm = _bn(mid, bn_momentum, bn_epsilon, rngs)
        self.se = SqueezeExcite(mid, se_reduce_ratio, compute_dtype=dt, rngs=rngs)
        self.project = PointwiseConv(mid, out_channels, compute_dtype=dt, rngs=rngs)
        self.project_norm = _bn(out_channels, bn_momentum, bn_epsilon, rngs)
        self.drop_path = DropPath(drop_path_rate, rngs=rngs)
        self.shortcut_modes = (str(shortcut_downsample), str(shortcut_repeat))

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        ura = not train
        _, t, h, w, c = x.shape
        x = x + jnp.asarray(positional_encoding_3d(t, h, w, c))
        y = jax.nn.silu(self.expand_norm(self.expand(x).astype(jnp.float32), use_running_average=ura))
        y = jax.nn.silu(self.spatial_norm(self.spatial(y).astype(jnp.float32), use_running_average=ura))
        y = jax.nn.silu(self.temporal_norm(self.temporal(y).astype(jnp.float32), use_running_average=ura))
        y = self.se(y)
        y = self.project_norm(self.project(y).astype(jnp.float32), use_running_average=ura)
        return self.drop_path(y, train=train) + shortcut(x, self.out_channels, self.stride, *self.shortcut_modes)


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
        self.stem = PointwiseConv(in_channels, stem, compute_dtype=dt, rngs=rngs)
        self.stem_norm = _bn(stem, config.bn_momentum, config.bn_epsilon, rngs)
        rates = [float(config.drop_path_rate) * i / len(channels) for i in range(len(channels))]
        self.blocks = nnx.List(
            [
                InvertedResidualBlock(
                    ci, co, stride=s, expansion_ratio=int(bc.expansion_ratio),
                    spatial_kernel=int(bc.spatial_kernel), temporal_kernel=int(bc.temporal_kernel),
                    se_reduce_ratio=int(bc.se_reduce_ratio), drop_path_rate=float(r), compute_dtype=dt,
                    bn_momentum=config.bn_momentum, bn_epsilon=config.bn_epsilon,
                    shortcut_downsample=bc.get("shortcut_downsample", "nearest"),
                    shortcut_repeat=bc.get("shortcut_repeat", "tile"),
                    depthwise_impl=bc.get("depthwise_impl", "auto"), rngs=rngs,
                )
                for ci, co, s, r in zip((stem, *channels[:-1]), channels, strides, rates)
            ]
        )
        self.out_channels = int(channels[-1]) if channels else stem
        self.remat = bool(config.get("remat", False))

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = self.stem_norm(self.stem(x).astype(jnp.float32), use_running_average=not train)
        for block in self.blocks:
            x = run_layer(block, x, train=train, remat=self.remat)
        return jnp.mean(x.astype(jnp.float32), axis=(2, 3))


class CortexLayer(nnx.Module):
    """Grouped 1x1 linear layer (a kernel-size-1 grouped Conv1d, no bias), BN, SiLU, channel
    shuffle, DropPath, + channel-repeating shortcut (optionally BatchNorm'd):
    [B, T, Cin] -> [B, T, Cout]."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, drop_path_rate: float, *,
                 compute_dtype: jnp.dtype, bn_momentum: float, bn_epsilon: float,
                 shortcut_norm: bool = False, shortcut_repeat: str = "tile", rngs: nnx.Rngs):
        if in_channels % groups or out_channels % groups or out_channels % in_channels:
            raise ValueError(f"cortex layer {in_channels} -> {out_channels} with {groups} groups")
        self.groups, self.out_channels = int(groups), int(out_channels)
        shape = (groups, in_channels // groups, out_channels // groups)
        self.kernel = nnx.Param(lecun_normal(batch_axes=(0,))(rngs.params(), shape))
        self.norm = _bn(out_channels, bn_momentum, bn_epsilon, rngs)
        self.drop_path = DropPath(drop_path_rate, rngs=rngs)
        self.shortcut_norm = _bn(out_channels, bn_momentum, bn_epsilon, rngs) if shortcut_norm else nnx.data(None)
        self.shortcut_repeat = str(shortcut_repeat)
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dt = self.compute_dtype
        b, t, c = x.shape
        xg = x.astype(dt).reshape(b, t, self.groups, c // self.groups)
        y = jnp.einsum("btgi,gio->btgo", xg, self.kernel[...].astype(dt)).reshape(b, t, self.out_channels)
        y = jax.nn.silu(self.norm(y.astype(jnp.float32), use_running_average=not train))
        y = channel_shuffle(y, self.groups)
        skip = repeat_channels(x, self.out_channels, self.shortcut_repeat)
        if self.shortcut_norm is not None:
            skip = self.shortcut_norm(skip, use_running_average=not train)
        return self.drop_path(y, train=train) + skip


class Cortex(nnx.Module):
    """Cortex layers widening the per-frame features (256 -> 1024 -> 2048 -> 4096)."""

    def __init__(self, in_channels: int, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        cc = config.cortex
        channels = tuple(cc.channels)
        self.layers = nnx.List(
            [
                CortexLayer(
                    ci, co, int(cc.groups), float(cc.drop_path_rate),
                    compute_dtype=jnp.dtype(config.compute_dtype), bn_momentum=config.bn_momentum,
                    bn_epsilon=config.bn_epsilon, shortcut_norm=bool(cc.get("shortcut_norm", False)),
                    shortcut_repeat=cc.get("shortcut_repeat", "tile"), rngs=rngs,
                )
                for ci, co in zip((in_channels, *channels[:-1]), channels)
            ]
        )
        self.out_channels = int(channels[-1]) if channels else in_channels

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for layer in self.layers:
            x = layer(x, train=train)
        return x


def readout_layout(card: DatasetCard, groups: int) -> tuple[np.ndarray, int]:
    """(slot [M, Nmax] int32, per-group width G): neuron n of mouse i (N_i neurons) is read by
    group n // ceil(N_i / groups) (a grouped 1x1 convolution: the first half of a mouse's
    neurons read the first half of the channels) at slot group * G + n % ceil(N_i / groups),
    G = ceil(Nmax / groups). Padded neurons take the mouse's unused slots, so every slot holds
    at most one neuron."""
    g_width = -(-card.max_neurons // groups)
    slot = np.zeros((len(card.mice), card.max_neurons), np.int32)
    for i, m in enumerate(card.mice):
        n = m.n_neurons
        per = max(-(-n // groups), 1)
        idx = np.arange(n)
        slot[i, :n] = (idx // per) * g_width + idx % per
        unused = np.setdiff1d(np.arange(groups * g_width), slot[i, :n])
        slot[i, n:] = unused[: card.max_neurons - n]
    return slot, g_width


class MouseReadout(nnx.Module):
    """Per-mouse readouts, stacked over mice: dropout, grouped 1x1 linear layer C -> the
    mouse's neurons (+ bias), softplus with beta. [B, T, C] features, mouse [B] -> [B, T, Nmax].

    Gathering a [C, Nmax] weight per sample would be far too much memory at competition scale
    (4096 x 8000 x 4 B = 131 MB per sample), so every sample is read out by all mice at once
    with one einsum and each sample's mouse is selected afterwards: this costs M times the
    compute of the per-sample product (cheap next to the core), and its [B, T, M, Nmax] output
    is the memory peak.
    """

    def __init__(self, card: DatasetCard, in_channels: int, config: ml_collections.ConfigDict, *,
                 compute_dtype: jnp.dtype, rngs: nnx.Rngs):
        groups = int(config.groups)
        if in_channels % groups:
            raise ValueError(f"{in_channels} readout channels do not split into {groups} groups")
        slot, g_width = readout_layout(card, groups)
        self.groups, self.g_width = groups, g_width
        self.slot = ReadoutConstant(jnp.asarray(slot))
        n_mice = len(card.mice)
        shape = (n_mice, groups, in_channels // groups, g_width)
        self.kernel = nnx.Param(lecun_normal(batch_axes=(0, 1))(rngs.params(), shape))
        beta = float(config.softplus_beta)
        bias = np.full((n_mice, groups * g_width), inverse_softplus_beta(0.0, beta), np.float32)
        for i, m in enumerate(card.mice):
            bias[i, slot[i, : m.n_neurons]] = inverse_softplus_beta(m.mean_response, beta)
        self.bias = nnx.Param(jnp.asarray(bias))
        self.beta = nnx.Param(jnp.asarray(beta, jnp.float32)) if config.learn_beta else beta
        self.dropout = nnx.Dropout(
            float(config.dropout), broadcast_dims=(1,) if config.channel_dropout else (), rngs=rngs
        )
        self.compute_dtype = compute_dtype

    def all_mice(self, features: jax.Array) -> jax.Array:
        """[B, T, C] -> pre-activation of every mouse's slots [B, T, M, groups * G] (no bias)."""
        b, t, c = features.shape
        dt = self.compute_dtype
        x = features.astype(dt).reshape(b, t, self.groups, c // self.groups)
        out = jnp.einsum("btgc,mgcn->btmgn", x, self.kernel[...].astype(dt), preferred_element_type=jnp.float32)
        return out.reshape(b, t, out.shape[2], -1)

    def __call__(self, features: jax.Array, mouse: jax.Array, *, train: bool) -> jax.Array:
        x = self.dropout(features, deterministic=not train)
        out = self.all_mice(x)  # [B, T, M, S]
        b, t, m, s = out.shape
        index = mouse[:, None] * s + self.slot[...][mouse]  # [B, Nmax] into the flattened (M, S)
        pre = jnp.take_along_axis(out.reshape(b, t, m * s), index[:, None, :], axis=2)
        pre = pre + jnp.take_along_axis(self.bias[...][mouse], self.slot[...][mouse], axis=1)[:, None]
        return softplus_beta(pre, self.softplus_beta())

    def softplus_beta(self) -> float | jax.Array:
        """The softplus beta: a constant, or a learned parameter (kept >= 1e-3)."""
        if isinstance(self.beta, nnx.Param):
            return jnp.maximum(self.beta[...], 1e-3)
        return self.beta


class DwiseNeuroModel(nnx.Module):
    """`model(batch, train)` -> positive rates [B, clip_length, Nmax] for a clip of exactly
    `clip_length` frames (every frame predicted: `frames_lost` is 0)."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        if card.kind != "video":
            raise ValueError(f"DwiseNeuro needs video data, the card says {card.kind!r}")
        inputs = config.inputs
        self.clip_length = int(config.clip_length)
        self.temporal_stride = int(config.temporal_stride)
        if self.clip_length < 1 or self.temporal_stride < 1:
            raise ValueError("clip_length and temporal_stride must be positive")
        self.frame_size = tuple(int(s) for s in config.frame_size)
        h, w = card.frame_shape
        if h > self.frame_size[0] or w > self.frame_size[1]:
            raise ValueError(f"frames of {h}x{w} do not fit frame_size {self.frame_size}")
        self.use_behavior = bool(inputs.behavior)
        self.use_pupil = bool(inputs.pupil_center)
        self.map_scale = float(inputs.get("map_scale", 1.0))
        in_channels = 1 + card.behavior_dim * self.use_behavior + 2 * self.use_pupil
        dt = jnp.dtype(config.compute_dtype)
        self.core = Core(in_channels, config, rngs=rngs)
        self.cortex = Cortex(self.core.out_channels, config, rngs=rngs)
        self.readout = MouseReadout(card, self.cortex.out_channels, config.readout, compute_dtype=dt, rngs=rngs)

    def frames_lost(self, frames: int | None = None) -> int:
        """Every frame of a clip gets a prediction."""
        return 0

    def frames_out(self, frames: int) -> int:
        return frames

    def _inputs(self, batch: Mapping[str, jax.Array]) -> jax.Array:
        """[B, T / stride, *frame_size, C]: every stride-th frame, the video zero padded
        (centred), the constant maps over the whole padded frame."""
        keys = ("video", "behavior", "pupil_center")
        picked = {k: jnp.asarray(batch[k])[:, :: self.temporal_stride] for k in keys if k in batch}
        video = picked["video"]
        h, w = video.shape[2:4]
        ph, pw = self.frame_size[0] - h, self.frame_size[1] - w
        if ph < 0 or pw < 0:
            raise ValueError(f"frames of {h}x{w} do not fit frame_size {self.frame_size}")
        picked["video"] = jnp.pad(video, ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        return core_input(picked, self.use_behavior, self.use_pupil, self.map_scale)

    def __call__(self, batch: Mapping[str, jax.Array], train: bool = False) -> jax.Array:
        frames = batch["video"].shape[1]
        if frames != self.clip_length:
            raise ValueError(f"DwiseNeuro takes clips of exactly {self.clip_length} frames, got {frames}")
        features = self.cortex(self.core(self._inputs(batch), train=train), train=train)  # [B, T', C]
        rates = self.readout(features, jnp.asarray(batch["mouse"], jnp.int32), train=train)
        # Each processed step stands for the `temporal_stride` frames starting at it.
        return jnp.repeat(rates, self.temporal_stride, axis=1)[:, : self.clip_length]


@register_model("dwiseneuro", default_config=dwiseneuro_config)
def build_dwiseneuro(config: ml_collections.ConfigDict, card: DatasetCard, rngs: nnx.Rngs) -> DwiseNeuroModel:
    return DwiseNeuroModel(config, card, rngs=rngs)
