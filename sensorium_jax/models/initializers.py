"""Parameter initializers shared by every model (cores, readouts, shifters, MLPs)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

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


def truncated_normal(std: float) -> Initializer:
    """Normal(0, std) with values beyond +-2 std clipped to +-2 std (clipped, not redrawn, so it
    shares `_draw`'s few random kernels). For the reference's `trunc_normal_(std=0.02)`, whose
    cut at +-2 absolute is a plain normal in effect: the clip only bounds rare outliers."""

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jnp.clip(_draw(key, shape, std, "normal"), -2 * std, 2 * std).astype(dtype)

    return init


def xavier_normal(gain: float = 1.0) -> Initializer:
    """Glorot/Xavier normal for a convolution kernel laid out (*receptive, in, out) or a dense
    (in, out): std = gain * sqrt(2 / (fan_in + fan_out)), both fans counting the receptive
    field, as torch's `xavier_normal_` on the same kernel (what the reference cores use)."""

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        return _draw(key, shape, gain * math.sqrt(2.0 / max(fan_in + fan_out, 1)), "normal").astype(dtype)

    return init


CONV_INITIALIZERS: dict[str, Callable[[], Initializer]] = {
    "xavier_normal": xavier_normal,
    "lecun_normal": lecun_normal,
}


def conv_initializer(name: str) -> Initializer:
    """The convolution initializer called `name` (`CONV_INITIALIZERS`)."""
    if name not in CONV_INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; known: {', '.join(sorted(CONV_INITIALIZERS))}")
    return CONV_INITIALIZERS[name]()
