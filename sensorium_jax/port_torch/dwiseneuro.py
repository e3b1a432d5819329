"""The first-place DwiseNeuro (github.com/lRomul/sensorium, `src/models/dwiseneuro.py`) into
`models.dwiseneuro`.

Reference names (a plain state dict, or argus' checkpoint dict holding it as `nn_state_dict`):

    core.stem.0.weight [C0, Cin, 1, 1, 1], core.stem.1.bn.*            stem conv + BatchNorm
    core.blocks.<2i>.inv_freq                                           positional encoding (fixed)
    core.blocks.<2i+1>.conv_pw.{0.weight, 1.bn.*}                       expansion
    core.blocks.<2i+1>.spat_covn_dw.{0.weight, 1.bn.*}                  depthwise (1, k, k)
    core.blocks.<2i+1>.temp_covn_dw.{0.weight, 1.bn.*}                  depthwise (kt, 1, 1)
    core.blocks.<2i+1>.se.conv_reduce / conv_expand .{weight, bias}     squeeze-excitation
    core.blocks.<2i+1>.conv_pwl.{0.weight, 1.bn.*}, .bn_sc.bn.*         projection, shortcut BN
    cortex.layers.<j>.conv.weight [Cout, Cin / g, 1], .bn.bn.*, .bn_sc.bn.*
    readouts.<k>.layer.1.weight [ceil(N / g) * g, C / g, 1], .bias      per mouse, by position

The reference indexes its readouts by position in its list of mice (`constants.mice`); the
names of those positions come from `mice` (default: that list), then mice are matched by name
against the store. Neuron n of a mouse is the grouped convolution's output channel n, which is
our readout's slot of neuron n (`dwiseneuro_heads.readout_layout`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models.dwiseneuro import DwiseNeuroModel
from sensorium_jax.models.dwiseneuro_blocks import (
    Core,
    DepthwiseConv,
    InvertedResidualBlock,
    PointwiseConv,
    SqueezeExcite,
)
from sensorium_jax.models.dwiseneuro_heads import CortexLayer, MouseReadout
from sensorium_jax.errors import InputDataError
from sensorium_jax.port_torch.state_dict import (
    StateDict,
    assign,
    assign_batch_norm,
    batch_norm_stats,
    conv3d_kernel,
)

REFERENCE = "lRomul/sensorium DwiseNeuro (first place, SENSORIUM 2023)"
# The first-place code's order of the competition mice (its readouts.<k>): 5 new, then 5 old.
REFERENCE_MICE = (
    "dynamic29515-10-12-Video-9b4f6a1a067fe51e15306b9628efea20",
    "dynamic29623-4-9-Video-9b4f6a1a067fe51e15306b9628efea20",
    "dynamic29647-19-8-Video-9b4f6a1a067fe51e15306b9628efea20",
    "dynamic29712-5-9-Video-9b4f6a1a067fe51e15306b9628efea20",
    "dynamic29755-2-8-Video-9b4f6a1a067fe51e15306b9628efea20",
    "dynamic29156-11-10-Video-8744edeac3b4d1ce16b680916b5267ce",
    "dynamic29228-2-10-Video-8744edeac3b4d1ce16b680916b5267ce",
    "dynamic29234-6-9-Video-8744edeac3b4d1ce16b680916b5267ce",
    "dynamic29513-3-5-Video-8744edeac3b4d1ce16b680916b5267ce",
    "dynamic29514-2-9-Video-8744edeac3b4d1ce16b680916b5267ce",
)
INV_FREQ_TOLERANCE = 1e-6


def import_model(sd: StateDict, model: DwiseNeuroModel, card: DatasetCard, mice: Sequence[str] | None = None) -> None:
    """Fills a built `DwiseNeuroModel` from the reference's state dict (keys checked)."""
    import_core(sd, model.core)
    for j, layer in enumerate(model.cortex.layers):
        import_cortex_layer(sd, layer, f"cortex.layers.{j}")
    import_readouts(sd, model.readout, card, tuple(mice) if mice else REFERENCE_MICE)


def _pointwise(sd: StateDict, conv: PointwiseConv, key: str) -> None:
    """1x1x1 Conv3d [O, I, 1, 1, 1] -> our [I, O] kernel."""
    n_in, n_out = conv.kernel.shape
    assign(conv.kernel, sd.take(key, (n_out, n_in, 1, 1, 1))[:, :, 0, 0, 0].T)


def _depthwise(sd: StateDict, conv: DepthwiseConv, key: str) -> None:
    """Grouped (one per channel) Conv3d [C, 1, kt, kh, kw] -> our [kt, kh, kw, 1, C] kernel."""
    kt, kh, kw, _, c = conv.kernel.shape
    assign(conv.kernel, conv3d_kernel(sd.take(key, (c, 1, kt, kh, kw))))


def _norm(sd: StateDict, norm: nnx.BatchNorm, prefix: str) -> None:
    assign_batch_norm(norm, batch_norm_stats(sd, prefix, norm.scale.shape[0]))


def import_core(sd: StateDict, core: Core) -> None:
    _pointwise(sd, core.stem, "core.stem.0.weight")
    _norm(sd, core.stem_norm, "core.stem.1.bn")
    for i, block in enumerate(core.blocks):
        _check_encoding(sd, f"core.blocks.{2 * i}.inv_freq", block.in_channels)
        import_block(sd, block, f"core.blocks.{2 * i + 1}")


def _check_encoding(sd: StateDict, key: str, channels: int) -> None:
    """The encoding is computed, not stored; its saved frequencies must be the ones we compute."""
    d = 2 * math.ceil(channels / 6)
    ours = 1.0 / 10000.0 ** (np.arange(0, d, 2, dtype=np.float64) / d)
    theirs = sd.take(key, ours.shape)
    if not np.allclose(theirs, ours, rtol=INV_FREQ_TOLERANCE, atol=0.0):
        raise InputDataError(sd.source, key, "the sinusoidal frequencies 10000^(-2i/d)", "other values")


def import_block(sd: StateDict, block: InvertedResidualBlock, prefix: str) -> None:
    _pointwise(sd, block.expand, f"{prefix}.conv_pw.0.weight")
    _norm(sd, block.expand_norm, f"{prefix}.conv_pw.1.bn")
    _depthwise(sd, block.spatial, f"{prefix}.spat_covn_dw.0.weight")
    _norm(sd, block.spatial_norm, f"{prefix}.spat_covn_dw.1.bn")
    _depthwise(sd, block.temporal, f"{prefix}.temp_covn_dw.0.weight")
    _norm(sd, block.temporal_norm, f"{prefix}.temp_covn_dw.1.bn")
    import_squeeze_excite(sd, block.se, f"{prefix}.se")
    _pointwise(sd, block.project, f"{prefix}.conv_pwl.0.weight")
    _norm(sd, block.project_norm, f"{prefix}.conv_pwl.1.bn")
    if block.shortcut_norm is not None:
        _norm(sd, block.shortcut_norm, f"{prefix}.bn_sc.bn")


def import_squeeze_excite(sd: StateDict, se: SqueezeExcite, prefix: str) -> None:
    channels, hidden = se.w1.shape
    assign(se.w1, sd.take(f"{prefix}.conv_reduce.weight", (hidden, channels, 1, 1, 1))[:, :, 0, 0, 0].T)
    assign(se.b1, sd.take(f"{prefix}.conv_reduce.bias", (hidden,)))
    assign(se.w2, sd.take(f"{prefix}.conv_expand.weight", (channels, hidden, 1, 1, 1))[:, :, 0, 0, 0].T)
    assign(se.b2, sd.take(f"{prefix}.conv_expand.bias", (channels,)))


def import_cortex_layer(sd: StateDict, layer: CortexLayer, prefix: str) -> None:
    """Grouped Conv1d [Cout, Cin / g, 1]: output channel g * (Cout / g) + o of group g ->
    our kernel [g, Cin / g, Cout / g]."""
    groups, per_in, per_out = layer.kernel.shape
    weight = sd.take(f"{prefix}.conv.weight", (groups * per_out, per_in, 1))[:, :, 0]
    assign(layer.kernel, weight.reshape(groups, per_out, per_in).transpose(0, 2, 1))
    _norm(sd, layer.norm, f"{prefix}.bn.bn")
    if layer.shortcut_norm is not None:
        _norm(sd, layer.shortcut_norm, f"{prefix}.bn_sc.bn")


def _readout_positions(sd: StateDict, card: DatasetCard, mice: tuple[str, ...]) -> dict[str, int]:
    """Store mouse name -> the reference's readout index; readouts of other mice are refused."""
    present = sorted({int(k.split(".")[1]) for k in sd.keys_under("readouts.") if k.split(".")[1].isdigit()})
    for k in present:
        if k >= len(mice) or mice[k] not in card.names:
            name = mice[k] if k < len(mice) else "no name (give --mice)"
            raise InputDataError(sd.source, f"readouts.{k}", f"a readout of a mouse of the store "
                                 f"({', '.join(card.names)})", f"mouse {name}")
    index = {mice[k]: k for k in present}
    for name in card.names:
        if name not in index:
            raise InputDataError(sd.source, f"readouts.<{name}>", "a readout for every mouse of the store",
                                 "missing")
    return index


def import_readouts(sd: StateDict, readout: MouseReadout, card: DatasetCard, mice: tuple[str, ...]) -> None:
    """Each mouse's grouped Conv1d into our stacked kernel [M, g, C / g, G] and bias [M, g * G]."""
    index = _readout_positions(sd, card, mice)
    _, groups, per_in, g_width = readout.kernel.shape
    for m, mouse in enumerate(card.mice):
        prefix = f"readouts.{index[mouse.name]}.layer.1"
        per = max(-(-mouse.n_neurons // groups), 1)
        weight = sd.take(f"{prefix}.weight", (per * groups, per_in, 1))[:, :, 0]
        bias = sd.take(f"{prefix}.bias", (per * groups,))
        for g in range(groups):  # output channel g * per + j is our slot g * G + j
            rows = slice(g * per, (g + 1) * per)
            assign(readout.kernel, weight[rows].T, (m, g, slice(None), slice(0, per)))
            assign(readout.bias, bias[rows], (m, slice(g * g_width, g * g_width + per)))
