"""A small random convolutional network in plain JAX: fast enough to run the atlas in tests on CPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp

LAYERS = ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3")


def init(seed: int = 0, channels: tuple[int, int, int] = (8, 16, 32)) -> dict[str, jax.Array]:
    """He-normal kernels: 7x7 on the grayscale image, then 3x3."""
    keys = jax.random.split(jax.random.key(seed), 3)
    shapes = ((7, 7, 1, channels[0]), (3, 3, channels[0], channels[1]), (3, 3, channels[1], channels[2]))
    return {f"w{i + 1}": jax.random.normal(k, s) * jnp.sqrt(2.0 / (s[0] * s[1] * s[2]))
            for i, (k, s) in enumerate(zip(keys, shapes))}


def features(params: dict[str, jax.Array], images: jax.Array) -> dict[str, jax.Array]:
    """images [B, H, W] in 0-255 -> every layer's output (channels last)."""
    x = ((jnp.asarray(images, jnp.float32) - 128.0) / 64.0)[..., None]
    out = {}
    for i in (1, 2, 3):
        x = out[f"conv{i}"] = jax.lax.conv_general_dilated(
            x, params[f"w{i}"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = out[f"relu{i}"] = jax.nn.relu(x)
        if i < 3:
            x = out[f"pool{i}"] = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        else:
            out["pool3"] = jnp.mean(x * x, axis=(1, 2))  # position-invariant energy
    return out
