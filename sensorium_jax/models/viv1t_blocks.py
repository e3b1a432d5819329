"""The ViV1T core's parts: the tubelet tokenizer, the factorized position embeddings and the
parallel transformer block (attention and MLP side by side on one normalised input).

Parameter layouts follow the reference (github.com/bryanlimy/ViV1T, `vivit.py`): a tubelet's
values are flattened as (channel, frame, row, column), normalised by a LayerNorm over that
vector, projected linearly and normalised again; one bias-free linear layer gives q, k, v and
the MLP's hidden units; attention and MLP outputs are projected back without bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sensorium_jax.models.attention import attention
from sensorium_jax.models.dwiseneuro_blocks import DropPath
from sensorium_jax.models.initializers import Initializer, lecun_normal

LAYER_NORM_EPS = 1e-5  # torch's default, as in the reference
TOKENIZER_IMPLS = ("conv", "patches")


def normal(std: float) -> Initializer:
    """N(0, std^2) from the shared power-of-two random buffers (`initializers.lecun_normal`,
    rescaled), so building the model compiles few random kernels. The reference's
    `trunc_normal_(std=0.02)` truncates at +-2 (100 std): a plain normal."""

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        fan_in = math.prod(shape[:-1]) if len(shape) > 1 else 1
        return (lecun_normal()(key, shape) * (std * math.sqrt(max(fan_in, 1)))).astype(dtype)

    return init


def layer_norm(features: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(features, epsilon=LAYER_NORM_EPS, rngs=rngs)


def tokens_out(size: int, patch: int, stride: int) -> int:
    """Tubelets along an axis of `size` (no padding, as the reference's `unfold`)."""
    return (size - patch) // stride + 1


class Tokenizer(nnx.Module):
    """[B, T, H, W, C] -> tokens [B, T - tp + 1, H', W', E]: every tp x sp x sp tubelet (temporal
    stride 1, spatial stride `spatial_stride`) flattened, LayerNorm, linear, LayerNorm, dropout.

    `impl` "patches" builds the flattened tubelets as the reference does (C*tp*sp*sp values per
    token: 6,125 at competition scale, ~1.3 GB per 150-frame clip in float32); "conv" computes
    the same tokens without them: the first LayerNorm's statistics are window sums of x and x^2,
    and its scale folds into the linear layer, which then runs as one strided 3D convolution.
    """

    def __init__(self, channels: int, emb_dim: int, temporal_patch: int, spatial_patch: int, spatial_stride: int,
                 dropout: float, *, impl: str, patch_norm: bool = True, compute_dtype: jnp.dtype, rngs: nnx.Rngs):
        if impl not in TOKENIZER_IMPLS:
            raise ValueError(f"unknown tokenizer impl {impl!r}; known: {', '.join(TOKENIZER_IMPLS)}")
        self.patch = (int(temporal_patch), int(spatial_patch), int(spatial_patch))
        self.stride = (1, int(spatial_stride), int(spatial_stride))
        self.channels = int(channels)
        patch_dim = self.channels * math.prod(self.patch)
        # assigned once: NNX makes an attribute first set to None static
        self.patch_norm = layer_norm(patch_dim, rngs) if patch_norm else nnx.data(None)
        self.kernel = nnx.Param(normal(0.02)(rngs.params(), (patch_dim, emb_dim)))  # rows: (c, t, y, x)
        self.bias = nnx.Param(jnp.zeros((emb_dim,), jnp.float32))
        self.token_norm = layer_norm(emb_dim, rngs)
        self.dropout = nnx.Dropout(float(dropout), rngs=rngs)
        self.impl = impl
        self.compute_dtype = compute_dtype

    def _patches(self, x: jax.Array) -> jax.Array:
        """The reference's path: flattened tubelets [B, T', H', W', C*tp*sp*sp], normalised, projected."""
        patches = jax.lax.conv_general_dilated_patches(
            x, self.patch, self.stride, "VALID", dimension_numbers=("NTHWC", "THWIO", "NTHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )  # feature order (c, t, y, x)
        normed = patches if self.patch_norm is None else self.patch_norm(patches)
        dt = self.compute_dtype
        return jnp.einsum("...d,de->...e", normed.astype(dt), self.kernel[...].astype(dt),
                          preferred_element_type=jnp.float32) + self.bias[...]

    def _conv(self, x: jax.Array) -> jax.Array:
        """The same tokens as `_patches`: (x.(g*W) - mean * sum(g*W)) / std + (beta.W + b)."""
        if self.patch_norm is None:
            return self._project(x, self.kernel[...]) + self.bias[...]
        d = self.kernel.shape[0]
        window, strides = (1, *self.patch), (1, *self.stride)
        pool = lambda v: jax.lax.reduce_window(v, 0.0, jax.lax.add, window, strides, "VALID")  # noqa: E731
        mean = pool(jnp.sum(x, axis=-1)) / d  # [B, T', H', W']
        var = jnp.maximum(pool(jnp.sum(jnp.square(x), axis=-1)) / d - jnp.square(mean), 0.0)
        inv_std = jax.lax.rsqrt(var + self.patch_norm.epsilon)[..., None]
        gamma, beta = self.patch_norm.scale[...], self.patch_norm.bias[...]
        scaled = gamma[:, None] * self.kernel[...]  # [D, E]
        dots = self._project(x, scaled)
        return (dots - mean[..., None] * jnp.sum(scaled, axis=0)) * inv_std + (beta @ self.kernel[...] + self.bias[...])

    def _project(self, x: jax.Array, weights: jax.Array) -> jax.Array:
        """Every tubelet (flattened as (c, t, y, x)) times `weights` [D, E], as one strided conv."""
        c, (t, h, w) = self.channels, self.patch
        kernel = weights.reshape(c, t, h, w, -1).transpose(1, 2, 3, 0, 4)  # [t, y, x, c, E]
        dt = self.compute_dtype
        return jax.lax.conv_general_dilated(
            x.astype(dt), kernel.astype(dt), self.stride, "VALID", dimension_numbers=("NTHWC", "THWIO", "NTHWC"),
            preferred_element_type=jnp.float32,
        )

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = x.astype(jnp.float32)
        tokens = self._conv(x) if self.impl == "conv" else self._patches(x)
        return self.dropout(self.token_norm(tokens), deterministic=not train)


class PositionEmbedding(nnx.Module):
    """Learned, factorized: one vector per spatial token and one per temporal position, added
    (the reference's `pos_encoding=3`, initialised N(0, std^2): the reference's randn is std 1)."""

    def __init__(self, frames: int, height: int, width: int, emb_dim: int, *, std: float = 1.0, rngs: nnx.Rngs):
        self.spatial = nnx.Param(normal(std)(rngs.params(), (height, width, emb_dim)))
        self.temporal = nnx.Param(normal(std)(rngs.params(), (frames, emb_dim)))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens [B, T', H', W', E]: the first T' temporal positions (a clip's own frames)."""
        t = tokens.shape[1]
        if t > self.temporal.shape[0]:
            raise ValueError(f"{t} token frames exceed the {self.temporal.shape[0]} learned temporal positions")
        return tokens + self.spatial[...][None, None] + self.temporal[...][None, :t, None, None]


class ParallelBlock(nnx.Module):
    """x + DropPath(attention(LN x)) + DropPath(MLP(LN x)) over [N, L, E] sequences (Wang's
    parallel block, the reference's `ParallelTransformerBlock`): one fused bias-free projection
    to q, k, v and the MLP's hidden units, GELU, bias-free output projections. Dropout acts on
    the attention's output (so the fused attention kernel stays usable) and on the MLP's hidden
    units; DropPath drops whole sequences."""

    def __init__(self, emb_dim: int, heads: int, head_dim: int, mlp_dim: int, *, attention_dropout: float,
                 mlp_dropout: float, drop_path: float, attention_impl: str, compute_dtype: jnp.dtype,
                 rngs: nnx.Rngs):
        inner = heads * head_dim
        self.heads, self.head_dim, self.mlp_dim = int(heads), int(head_dim), int(mlp_dim)
        self.norm = layer_norm(emb_dim, rngs)
        self.fused = nnx.Param(normal(0.02)(rngs.params(), (emb_dim, 3 * inner + mlp_dim)))
        self.attention_out = nnx.Param(normal(0.02)(rngs.params(), (inner, emb_dim)))
        self.mlp_out = nnx.Param(normal(0.02)(rngs.params(), (mlp_dim, emb_dim)))
        self.attention_dropout = nnx.Dropout(float(attention_dropout), rngs=rngs)
        self.mlp_dropout = nnx.Dropout(float(mlp_dropout), rngs=rngs)
        self.drop_attention = DropPath(drop_path, rngs=rngs)
        self.drop_mlp = DropPath(drop_path, rngs=rngs)
        self.attention_impl = attention_impl
        self.compute_dtype = compute_dtype

    def branches(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        """(attention branch, MLP branch) before DropPath, each [N, L, E] in float32."""
        dt = self.compute_dtype
        n, length, _ = x.shape
        h = jnp.einsum("nle,ef->nlf", self.norm(x).astype(dt), self.fused[...].astype(dt))
        inner = self.heads * self.head_dim
        q, k, v, hidden = jnp.split(h, [inner, 2 * inner, 3 * inner], axis=-1)
        shape = (n, length, self.heads, self.head_dim)
        attended = attention(q.reshape(shape), k.reshape(shape), v.reshape(shape), implementation=self.attention_impl)
        attended = self.attention_dropout(attended.reshape(n, length, inner), deterministic=not train)
        hidden = self.mlp_dropout(jax.nn.gelu(hidden, approximate=False), deterministic=not train)
        a = jnp.einsum("nlf,fe->nle", attended.astype(dt), self.attention_out[...].astype(dt),
                       preferred_element_type=jnp.float32)
        m = jnp.einsum("nlf,fe->nle", hidden.astype(dt), self.mlp_out[...].astype(dt),
                       preferred_element_type=jnp.float32)
        return a, m

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        a, m = self.branches(x, train=train)
        return x + self.drop_attention(a, train=train) + self.drop_mlp(m, train=train)
