"""A 3D shifted-window transformer core (Video Swin) with a behaviour MLP per block.

Tokens are [B, T, H, W, C] (channels last). Each block adds its behaviour embedding, then
window attention and a SwiGLU MLP with a depthwise 3D convolution, each with a residual:

    x = x + behaviour_mlp(behaviour, pupil)      (broadcast over H, W)
    x = x + window_attention(x)                  (shifted or not, relative position bias)
    x = x + swiglu_mlp(x)

Windows follow torchvision's Swin3D as the reference implementation uses it: the token map is
zero padded at its end to whole windows, a shifted block rolls it by -shift before
partitioning and masks pairs of tokens from different regions of the rolled map, and a
dimension no longer than the window takes one window of its own size and no shift. Padded
tokens are not masked (they enter as keys with the qkv bias only), as in the reference.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensorium_jax.models.attention import Implementation, attention
from sensorium_jax.models.initializers import truncated_normal, uniform
from sensorium_jax.models.kernels import check, depthwise_conv
from sensorium_jax.models.remat import recompute_in_backward

Size3 = tuple[int, int, int]


def torch_default(fan_in: int):
    """torch's default initialisation of convolutions and linear layers: U(+-1/sqrt(fan_in))."""
    return uniform(1.0 / math.sqrt(max(fan_in, 1)))


def effective_window(size: Size3, window: Size3, shift: Size3) -> tuple[Size3, Size3]:
    """(window, shift) for a token map of `size`: a dimension no longer than its window takes
    one window of the whole dimension and no shift (the reference's rule)."""
    win = tuple(s if s <= w else w for s, w in zip(size, window))
    sh = tuple(0 if s <= w else h for s, w, h in zip(size, window, shift))
    return win, sh  # type: ignore[return-value]


def padded_size(size: Size3, window: Size3) -> Size3:
    return tuple(-(-s // w) * w for s, w in zip(size, window))  # type: ignore[return-value]


def relative_position_index(window: Size3, table_window: Size3) -> np.ndarray:
    """[V, V] rows of the bias table for every pair of tokens of a `window` (V = its volume),
    in a table laid out for `table_window` ((2w-1) entries per dimension, row-major)."""
    coords = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij")).reshape(3, -1)
    rel = coords[:, :, None] - coords[:, None, :]  # [3, V, V]
    spans = [2 * w - 1 for w in table_window]
    rel = rel + np.asarray(table_window)[:, None, None] - 1
    return (rel[0] * spans[1] * spans[2] + rel[1] * spans[2] + rel[2]).astype(np.int32)


def region_ids(size: Size3, window: Size3, shift: Size3) -> np.ndarray:
    """[T, H, W] region of every token of the rolled (padded) map: three slices per shifted
    dimension (0:-window, -window:-shift, -shift:), numbered as the reference does."""
    ids = np.zeros(size, np.int32)
    count = 0
    # a dimension without shift is one region (the reference's third slice, 0:, covers it all)
    cuts = [((0, -w), (-w, -h), (-h, None)) if h else ((0, None),) for w, h in zip(window, shift)]
    for d0, d1 in cuts[0]:
        for h0, h1 in cuts[1]:
            for w0, w1 in cuts[2]:
                ids[d0:d1, h0:h1, w0:w1] = count
                count += 1
    return ids


def window_partition(x: jax.Array, window: Size3) -> jax.Array:
    """[B, T, H, W, C] (whole windows) -> [B, nW, V, C], windows in (t, h, w) row-major order
    (NumPy arrays stay NumPy: the mask is built on the host, also under tracing)."""
    b, t, h, w, c = x.shape
    wt, wh, ww = window
    x = x.reshape(b, t // wt, wt, h // wh, wh, w // ww, ww, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, -1, wt * wh * ww, c)


def window_reverse(x: jax.Array, window: Size3, size: Size3) -> jax.Array:
    """Inverse of `window_partition`: [B, nW, V, C] -> [B, T, H, W, C]."""
    b, _, _, c = x.shape
    (t, h, w), (wt, wh, ww) = size, window
    x = x.reshape(b, t // wt, h // wh, w // ww, wt, wh, ww, c)
    return x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t, h, w, c)


def shift_mask(size: Size3, window: Size3, shift: Size3) -> np.ndarray:
    """[nW, V, V] True where two tokens of a window of the rolled map come from the same region."""
    ids = window_partition(region_ids(size, window, shift)[None, ..., None], window)[0, ..., 0]  # [nW, V]
    return ids[:, :, None] == ids[:, None, :]


class WindowAttention3d(nnx.Module):
    """Multi-head self-attention inside 3D windows, shifted or not, with a learned relative
    position bias per head ((2Wt-1)(2Wh-1)(2Ww-1) entries)."""

    def __init__(self, dim: int, heads: int, window: Size3, shift: Size3, *, dtype: jnp.dtype,
                 implementation: Implementation = "fused", rngs: nnx.Rngs):
        if dim % heads:
            raise ValueError(f"{dim} channels do not split into {heads} heads")
        self.heads, self.window, self.shift, self.dtype = heads, tuple(window), tuple(shift), dtype
        self.implementation = implementation  # of `attention.attention`
        init = truncated_normal(0.02)  # the reference's linear layers and bias table
        zeros = nnx.initializers.zeros_init()
        self.qkv = nnx.Linear(dim, 3 * dim, kernel_init=init, bias_init=zeros, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, kernel_init=init, bias_init=zeros, dtype=dtype, rngs=rngs)
        entries = math.prod(2 * w - 1 for w in window)
        self.bias_table = nnx.Param(init(rngs.params(), (entries, heads)))

    def position_bias(self, window: Size3) -> jax.Array:
        """[heads, V, V] bias of every pair of tokens of a `window`."""
        index = relative_position_index(window, self.window)
        return jnp.moveaxis(self.bias_table[...][index], -1, 0)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        window, shift = effective_window((t, h, w), self.window, self.shift)
        size = padded_size((t, h, w), window)
        x = jnp.pad(x, ((0, 0), *[(0, p - s) for p, s in zip(size, (t, h, w))], (0, 0)))
        shifted = any(shift)
        if shifted:
            x = jnp.roll(x, tuple(-s for s in shift), axis=(1, 2, 3))
        windows = window_partition(x, window)  # [B, nW, V, C]
        n_windows, volume = windows.shape[1:3]
        qkv = self.qkv(windows.astype(self.dtype)).reshape(b, n_windows, volume, 3, self.heads, c // self.heads)
        q, k, v = (qkv[..., i, :, :] for i in range(3))  # [B, nW, V, heads, D]
        bias = self.position_bias(window)[None].astype(q.dtype)  # [1, heads, V, V]
        if shifted:
            mask = jnp.asarray(shift_mask(size, window, shift))[:, None, None]  # [nW, 1, 1, V, V]
            # over windows, so each window's mask is not copied for every clip
            attend = jax.vmap(lambda q, k, v, m: attention(q, k, v, bias, m, implementation=self.implementation),
                              in_axes=(1, 1, 1, 0), out_axes=1)
            out = attend(q, k, v, mask)
        else:
            flat = lambda a: a.reshape(b * n_windows, volume, self.heads, -1)  # noqa: E731
            out = attention(flat(q), flat(k), flat(v), bias, implementation=self.implementation).reshape(q.shape)
        out = self.proj(out.reshape(b, n_windows, volume, c))
        x = window_reverse(out, window, size)
        if shifted:
            x = jnp.roll(x, shift, axis=(1, 2, 3))
        return x[:, :t, :h, :w]


class SwiGLUMlp(nnx.Module):
    """Linear to 2 x hidden, SiLU(gate) * x, a depthwise 3x3x3 convolution with GELU, linear back."""

    def __init__(self, dim: int, hidden: int, *, dtype: jnp.dtype, kernels: str = "native", rngs: nnx.Rngs):
        init, zeros = truncated_normal(0.02), nnx.initializers.zeros_init()
        self.dtype, self.kernels = dtype, check(kernels)
        self.expand = nnx.Linear(dim, 2 * hidden, kernel_init=init, bias_init=zeros, dtype=dtype, rngs=rngs)
        conv_init = torch_default(27)  # the convolution keeps torch's default (fan_in 1 x 3 x 3 x 3)
        self.depthwise = nnx.Conv(hidden, hidden, (3, 3, 3), padding="SAME", feature_group_count=hidden,
                                  kernel_init=conv_init, bias_init=conv_init, dtype=dtype, rngs=rngs)
        self.project = nnx.Linear(hidden, dim, kernel_init=init, bias_init=zeros, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        value, gate = jnp.split(self.expand(x.astype(self.dtype)), 2, axis=-1)
        y = jax.nn.silu(gate) * value
        # the Conv holds the parameters (torch's layout); the sums run in the backend's form
        kernel = self.depthwise.kernel[...].astype(self.dtype)
        y = depthwise_conv(y, kernel, 1, self.kernels) + self.depthwise.bias[...].astype(self.dtype)
        y = jax.nn.gelu(y, approximate=False)
        return self.project(y)


class BehaviourMlp(nnx.Module):
    """Per frame: behaviour (+ pupil) -> dim/2 -> dim/p (tanh after both); the p frames of a token
    are concatenated to the token's `dim` channels (p = the patch's frames)."""

    def __init__(self, inputs: int, dim: int, frames_per_token: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        if dim % frames_per_token:
            raise ValueError(f"{dim} channels do not split over {frames_per_token} frames per token")
        init, zeros = truncated_normal(0.02), nnx.initializers.zeros_init()
        self.frames_per_token, self.dtype = frames_per_token, dtype
        self.hidden = nnx.Linear(inputs, dim // 2, kernel_init=init, bias_init=zeros, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(dim // 2, dim // frames_per_token, kernel_init=init, bias_init=zeros, dtype=dtype,
                              rngs=rngs)

    def __call__(self, behaviour: jax.Array) -> jax.Array:
        """[B, T, k] (T a multiple of the frames per token) -> [B, T / p, dim]."""
        b, t, _ = behaviour.shape
        y = jnp.tanh(self.out(jnp.tanh(self.hidden(behaviour.astype(self.dtype)))))
        return y.reshape(b, t // self.frames_per_token, -1)


class SwinBlock(nnx.Module):
    """Behaviour embedding, window attention and the MLP, each added to the tokens.

    `pre_norm` puts a LayerNorm before the attention and the MLP (Swin's block); the reference
    code has none inside its blocks (only after the patch embedding)."""

    def __init__(self, dim: int, heads: int, hidden: int, window: Size3, shift: Size3, behaviour_inputs: int,
                 frames_per_token: int, *, pre_norm: bool, dtype: jnp.dtype, attention: Implementation = "fused",
                 kernels: str = "native", rngs: nnx.Rngs):
        self.attention = WindowAttention3d(dim, heads, window, shift, dtype=dtype, implementation=attention, rngs=rngs)
        self.mlp = SwiGLUMlp(dim, hidden, dtype=dtype, kernels=kernels, rngs=rngs)
        self.behaviour = (BehaviourMlp(behaviour_inputs, dim, frames_per_token, dtype=dtype, rngs=rngs)
                          if behaviour_inputs else None)
        self.norms = nnx.List([nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs) for _ in range(2 if pre_norm else 0)])

    def __call__(self, x: jax.Array, behaviour: jax.Array | None) -> jax.Array:
        if self.behaviour is not None:
            x = x + self.behaviour(behaviour)[:, :, None, None, :].astype(x.dtype)
        a = self.norms[0](x) if self.norms else x
        x = x + self.attention(a).astype(x.dtype)
        m = self.norms[1](x) if self.norms else x
        return x + self.mlp(m).astype(x.dtype)


class PatchEmbed3d(nnx.Module):
    """Non-overlapping (pt, ph, pw) patches of the video -> `dim` channels, then LayerNorm.

    A strided convolution with kernel = stride is a matrix product of the flattened patches;
    written so it costs one matmul on any backend. The clip is zero padded at its end to whole
    patches, as in the reference."""

    def __init__(self, channels: int, dim: int, patch: Size3, *, norm: bool = True, dtype: jnp.dtype,
                 rngs: nnx.Rngs):
        self.patch, self.dtype, self.use_norm = tuple(patch), dtype, norm
        fan_in = channels * math.prod(patch)
        init = torch_default(fan_in)  # the reference leaves its patch convolution at torch's default
        self.proj = nnx.Linear(fan_in, dim, kernel_init=init, bias_init=init, dtype=dtype, rngs=rngs)
        self.norm = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)

    def __call__(self, video: jax.Array) -> jax.Array:
        """[B, T, H, W, C] -> [B, T/pt, H/ph, W/pw, dim] (rounded up)."""
        b = video.shape[0]
        size = video.shape[1:4]
        padded = padded_size(size, self.patch)
        x = jnp.pad(video, ((0, 0), *[(0, p - s) for p, s in zip(padded, size)], (0, 0)))
        # [B, T', pt, H', ph, W', pw, C] -> patches flattened as (pt, ph, pw, C)
        (pt, ph, pw), c = self.patch, x.shape[-1]
        x = x.reshape(b, padded[0] // pt, pt, padded[1] // ph, ph, padded[2] // pw, pw, c)
        x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, padded[0] // pt, padded[1] // ph, padded[2] // pw, -1)
        x = self.proj(x.astype(self.dtype)).astype(jnp.float32)
        return self.norm(x) if self.use_norm else x


class SwinCore(nnx.Module):
    """Patch embedding and `blocks` shifted-window blocks: video [B, T, H, W, 1] and behaviour
    [B, T, k] -> tokens [B, T/pt, H/ph, W/pw, dim] (float32)."""

    def __init__(self, config, behaviour_inputs: int, *, dtype: jnp.dtype, kernels: str = "native",
                 rngs: nnx.Rngs):
        patch, window, shift = (tuple(int(v) for v in config[k]) for k in ("patch", "window", "shift"))
        if config.shifted_blocks not in SHIFT_RULES:
            raise ValueError(f"shifted_blocks must be one of {', '.join(SHIFT_RULES)}, got {config.shifted_blocks!r}")
        self.patch, self.remat = patch, bool(config.remat)
        dim = int(config.dim)
        self.embed = PatchEmbed3d(1, dim, patch, norm=bool(config.embed_norm), dtype=dtype, rngs=rngs)
        no_shift = (0, 0, 0)
        self.blocks = nnx.List([
            SwinBlock(dim, int(config.heads), int(config.mlp_hidden), window,
                      shift if is_shifted(config.shifted_blocks, i) else no_shift, behaviour_inputs, patch[0],
                      pre_norm=bool(config.pre_norm), dtype=dtype, attention=config.attention, kernels=kernels,
                      rngs=rngs)
            for i in range(int(config.blocks))
        ])
        self.out_channels = dim

    def __call__(self, video: jax.Array, behaviour: jax.Array | None) -> jax.Array:
        x = self.embed(video)
        if behaviour is not None:
            pad = -behaviour.shape[1] % self.patch[0]  # frames padded like the video's
            behaviour = jnp.pad(behaviour, ((0, 0), (0, pad), (0, 0)))
        for block in self.blocks:
            x = run_block(block, x, behaviour, self.remat)
        return x.astype(jnp.float32)


SHIFT_RULES = ("all", "alternate")


def is_shifted(rule: str, index: int) -> bool:
    """Whether block `index` shifts its windows: "all" (the reference code: every block) or
    "alternate" (Swin's: blocks 1, 3, ...)."""
    return rule == "all" or index % 2 == 1


def run_block(block: SwinBlock, x: jax.Array, behaviour: jax.Array | None, remat: bool) -> jax.Array:
    """`block(x, behaviour)`, its activations recomputed in the backward pass when `remat` (the
    [windows, heads, V, V] attention maps and the MLP's hidden maps dominate a step's memory)."""
    if not remat:
        return block(x, behaviour)
    graphdef, state = nnx.split(block)
    return recompute_in_backward(lambda state, x, behaviour: nnx.merge(graphdef, state)(x, behaviour))(
        state, x, behaviour)
