"""The hierarchical Gaussian readout (HGRM) of Dynamic-V1FM: Gaussian readouts at several
resolutions of the neuron axis, fused per neuron.

"Resolution" is over neurons, not pixels (the reference's `FullGaussian2d` of Dynamic-VFM):
level k of a mouse with N neurons has N // k readout units. Unit j of level k reads the
feature map at the (sampled, shifted) position of neuron floor(j * N / (N // k)) with weights
of its own (nearest interpolation of the neuron axis, as `F.interpolate(mode="nearest")`);
neuron n then takes unit floor(n * (N // k) / N) of each level, through a per-mouse scalar
MLP (1 -> hidden_k, ELU, -> 1 without bias; hidden 32 / 64 / 128 / 256 for levels 2 / 4 / 8 /
16, i.e. 16 k; applied here to the units before upsampling, which gives the reference's
values with k times fewer hidden values). Level 1 is the plain Gaussian readout of
`readouts.GaussianReadout`. The levels are fused per neuron by their mean ("mean") or by
weights from a per-mouse squeeze-excitation over levels ("adaptive": each level's mean over
frames and the mouse's neurons -> L -> ReLU -> L -> sigmoid), then the neuron's bias is added.

Deviation: the reference's adaptive pooling averages over all its neurons; with all mice
stacked here it averages over the mouse's real neurons (padding excluded), which is the same
number. The reference builds the fusion blocks of every level count (2-5 levels) and uses one;
only the configured one exists here.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models.initializers import uniform
from sensorium_jax.models.readouts import GaussianReadout, ReadoutConstant, sample_and_weigh

FUSIONS = ("mean", "adaptive")


def level_indices(n_neurons: Sequence[int], level: int, n_max: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(down [M, U], up [M, n_max], U) for one level: down[m, j] is the neuron whose position unit
    j reads; up[m, n] the unit neuron n takes (U = the largest N // level; padding points at 0)."""
    units = max(max(n // level, 1) for n in n_neurons)
    down = np.zeros((len(n_neurons), units), np.int32)
    up = np.zeros((len(n_neurons), n_max), np.int32)
    for m, n in enumerate(n_neurons):
        u = max(n // level, 1)
        down[m, :u] = np.arange(u) * n // u  # floor(j * N / U)
        up[m, :n] = np.arange(n) * u // n  # floor(n * U / N)
    return down, up, units


class LevelRefine(nnx.Module):
    """Per mouse, a scalar MLP applied to every entry: 1 -> hidden (bias) -> ELU -> 1 (no bias),
    the reference's two 1x1 Conv1d (torch's default initialisation)."""

    def __init__(self, n_mice: int, hidden: int, *, rngs: nnx.Rngs):
        self.w1 = nnx.Param(uniform(1.0)(rngs.params(), (n_mice, hidden)))
        self.b1 = nnx.Param(uniform(1.0)(rngs.params(), (n_mice, hidden)))
        self.w2 = nnx.Param(uniform(1.0 / np.sqrt(hidden))(rngs.params(), (n_mice, hidden)))

    def __call__(self, x: jax.Array, mouse: jax.Array) -> jax.Array:
        """x [B, T, U] -> [B, T, U], entry by entry. The hidden [B, T, U, hidden] values are
        recomputed in the backward pass instead of stored."""
        w1, b1, w2 = (p[...][mouse][:, None, None, :] for p in (self.w1, self.b1, self.w2))
        return jax.checkpoint(refine)(x, w1, b1, w2)


def refine(x: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array) -> jax.Array:
    return jnp.sum(jax.nn.elu(x[..., None] * w1 + b1) * w2, axis=-1)


class AdaptiveFusion(nnx.Module):
    """Per mouse, weights of the L levels from their means: L -> L, ReLU, -> L, sigmoid."""

    def __init__(self, n_mice: int, levels: int, *, rngs: nnx.Rngs):
        init = uniform(1.0 / np.sqrt(levels))  # torch's default for Linear(L, L)
        self.w1, self.b1, self.w2, self.b2 = (
            nnx.Param(init(rngs.params(), shape)) for shape in
            ((n_mice, levels, levels), (n_mice, levels), (n_mice, levels, levels), (n_mice, levels))
        )

    def __call__(self, levels: jax.Array, neuron_mask: jax.Array, mouse: jax.Array) -> jax.Array:
        """levels [B, L, T, N], neuron_mask [B, N] -> [B, T, N]."""
        mask = neuron_mask[:, None, None, :].astype(levels.dtype)
        mean = jnp.sum(levels * mask, axis=(2, 3)) / (jnp.sum(mask, axis=(2, 3)) * levels.shape[2])  # [B, L]
        hidden = jax.nn.relu(jnp.einsum("bl,blk->bk", mean, self.w1[...][mouse]) + self.b1[...][mouse])
        weight = jax.nn.sigmoid(jnp.einsum("bl,blk->bk", hidden, self.w2[...][mouse]) + self.b2[...][mouse])
        return jnp.einsum("bltn,bl->btn", levels, weight)


class HierarchicalGaussianReadout(nnx.Module):
    """Gaussian readouts at levels (1, 2, 4, ...) of the neuron axis, fused (see the module doc).

    `base` is level 1 and owns what every level shares: the position network, sigma, the
    sampling noise and the bias. `levels == (1,)` is exactly `base`.
    """

    def __init__(self, card: DatasetCard, in_channels: int, *, levels: Sequence[int], fusion: str,
                 refine_hidden_per_level: int = 16, rngs: nnx.Rngs, **gaussian):
        levels = tuple(int(k) for k in levels)
        if not levels or levels[0] != 1 or len(set(levels)) != len(levels) or min(levels) < 1:
            raise ValueError(f"levels must start with 1 and be distinct positive integers, got {levels}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.base = GaussianReadout(card, in_channels, rngs=rngs, **gaussian)
        self.levels, self.fusion_rule = levels, fusion
        n_mice, n_max = len(card.mice), card.max_neurons
        self.neuron_mask = ReadoutConstant(jnp.asarray(np.arange(n_max)[None] < np.asarray(card.n_neurons)[:, None]))
        downs, ups, features, refines = [], [], [], []
        for k in levels[1:]:
            down, up, units = level_indices(card.n_neurons, k, n_max)
            downs.append(ReadoutConstant(jnp.asarray(down)))
            ups.append(ReadoutConstant(jnp.asarray(up)))
            features.append(nnx.Param(jnp.full((n_mice, units, in_channels), 1.0 / in_channels, jnp.float32)))
            refines.append(LevelRefine(n_mice, refine_hidden_per_level * k, rngs=rngs))
        self.down, self.up = nnx.List(downs), nnx.List(ups)
        self.level_features, self.refine = nnx.List(features), nnx.List(refines)
        self.fusion = AdaptiveFusion(n_mice, len(levels), rngs=rngs) if fusion == "adaptive" and len(levels) > 1 \
            else None

    def positions(self) -> jax.Array:
        """Mean positions of all mice's neurons, [M, Nmax, 2] in [-1, 1]."""
        return self.base.positions()

    def regularizer(self) -> jax.Array:
        return self.base.regularizer()

    def __call__(self, features: jax.Array, mouse: jax.Array, shift: jax.Array | None = None, *,
                 train: bool) -> jax.Array:
        """features [B, T, H, W, C], mouse [B], shift [B, T, 2] -> pre-activation [B, T, Nmax]."""
        base = self.base
        features = features.astype(jnp.float32)
        grid = base.grid(mouse, shift, features.shape[1], train=train)  # every level reads these
        outs = [sample_and_weigh(features, grid, base.features[...][mouse], base.neuron_chunk)]
        for down, up, weights, refine in zip(self.down, self.up, self.level_features, self.refine):
            level_grid = jnp.take_along_axis(grid, down[...][mouse][:, None, :, None], axis=2)
            units = sample_and_weigh(features, level_grid, weights[...][mouse], base.neuron_chunk)  # [B, T, U]
            # The reference refines the upsampled [B, T, N]; the scalar MLP acts entry by entry,
            # so refining the U units first and then upsampling gives the same values with k
            # times fewer hidden values ([B, T, N, 16] per level instead of [B, T, N, 16 k]).
            outs.append(jnp.take_along_axis(refine(units, mouse), up[...][mouse][:, None, :], axis=2))
        if len(outs) == 1:
            fused = outs[0]
        elif self.fusion is None:
            fused = sum(outs) / len(outs)
        else:
            fused = self.fusion(jnp.stack(outs, axis=1), self.neuron_mask[...][mouse], mouse)
        return fused + base.bias[...][mouse][:, None, :]
