"""DwiseNeuro's cortex (grouped 1x1 layers widening the per-frame features) and its per-mouse
grouped readouts with a softplus output (see `sensorium_jax.models.dwiseneuro`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models.dwiseneuro_blocks import DropPath, batch_norm, channel_shuffle, repeat_channels
from sensorium_jax.models.initializers import lecun_normal
from sensorium_jax.models.readouts import ReadoutConstant


def softplus_beta(x: jax.Array, beta: float | jax.Array) -> jax.Array:
    """log(1 + exp(beta * x)) / beta, numerically stable."""
    return jax.nn.softplus(beta * x) / beta


def inverse_softplus_beta(rate: np.ndarray, beta: float, floor: float = 1e-3) -> np.ndarray:
    """x with softplus_beta(x, beta) == rate (rates clipped at `floor`), stable for small beta * rate."""
    r = beta * np.maximum(np.asarray(rate, np.float64), floor)
    return ((r + np.log(-np.expm1(-r))) / beta).astype(np.float32)


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
        self.norm = batch_norm(out_channels, bn_momentum, bn_epsilon, rngs)
        self.drop_path = DropPath(drop_path_rate, rngs=rngs)
        self.shortcut_norm = batch_norm(out_channels, bn_momentum, bn_epsilon, rngs) if shortcut_norm else nnx.data(None)
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
                    bn_epsilon=config.bn_epsilon, shortcut_norm=bool(cc.shortcut_norm),
                    shortcut_repeat=cc.shortcut_repeat, rngs=rngs,
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

    @property
    def n_mice(self) -> int:
        return int(self.kernel.shape[0])

    def every_mouse(self, features: jax.Array, *, train: bool) -> jax.Array:
        """[B, T, C] -> every mouse's rates [B, T, M, Nmax] (one dropout mask for all mice)."""
        x = self.dropout(features, deterministic=not train)
        out = self.all_mice(x)  # [B, T, M, S]
        slot = self.slot[...]  # [M, Nmax]
        pre = jnp.take_along_axis(out, slot[None, None], axis=3)
        pre = pre + jnp.take_along_axis(self.bias[...], slot, axis=1)[None, None]
        return softplus_beta(pre, self.softplus_beta())

    def softplus_beta(self) -> float | jax.Array:
        """The softplus beta: a constant, or a learned parameter (kept >= 1e-3)."""
        if isinstance(self.beta, nnx.Param):
            return jnp.maximum(self.beta[...], 1e-3)
        return self.beta
