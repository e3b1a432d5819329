"""Shared pieces of the standard architectures: ImageNet-style preprocessing and pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess(images: jax.Array, size: int) -> jax.Array:
    """Stimuli [B, H, W] or [B, H, W, C] in 0-255 -> [B, size, size, 3], ImageNet-normalised.

    Grayscale is repeated to three channels; resizing is bilinear (antialiased when shrinking).
    """
    x = jnp.asarray(images, jnp.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    x = jax.image.resize(x, (x.shape[0], size, size, 3), method="linear", antialias=True)
    mean = jnp.asarray(IMAGENET_MEAN) * 255.0
    std = jnp.asarray(IMAGENET_STD) * 255.0
    return (x - mean) / std


def adaptive_avg_pool(x: jax.Array, out: int) -> jax.Array:
    """PyTorch's AdaptiveAvgPool2d for [B, H, W, C]: bins [floor(i H / o), ceil((i + 1) H / o))."""
    def pool_axis(x, axis):
        n = x.shape[axis]
        parts = []
        for i in range(out):
            lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
            parts.append(jnp.mean(jax.lax.slice_in_dim(x, lo, hi, axis=axis), axis=axis, keepdims=True))
        return jnp.concatenate(parts, axis=axis)

    return pool_axis(pool_axis(x, 1), 2)


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """PyTorch MaxPool2d (floor mode) for [B, H, W, C]."""
    pad = ((padding, padding), (padding, padding))
    return nnx.max_pool(x, (window, window), (stride, stride), padding=pad)


def kaiming_fan_out() -> nnx.Initializer:
    """torchvision's conv initialisation for VGG and ResNet (He normal, fan out)."""
    return nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_default() -> nnx.Initializer:
    """PyTorch's default layer initialisation (He uniform with a = sqrt(5): variance 1/(3 fan_in))."""
    return nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(cin: int, cout: int, k: int, *, stride: int = 1, pad: int = 0, bias: bool = True,
         init: nnx.Initializer | None = None, rngs: nnx.Rngs) -> nnx.Conv:
    """A 2D convolution with PyTorch's explicit symmetric padding."""
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                    use_bias=bias, kernel_init=init or torch_default(), rngs=rngs)
