"""The SENSORIUM 2023 starter kit's GRU baseline (`make_video_model` with
`core_type="2D_equivariant"`, `use_gru=True`, Gaussian readout, MLP shifter) into `models.gru`
with its rotation-equivariant core.

Reference names (neuralpredictors `RotationEquivariant2dCore`, `GRU_Module`):

    core.features.layer<l>.hermite_conv.coeffs                 [n(k), inputs, channels]  as ours
    core.features.layer<l>.hermite_conv.rotate_hermite.H       [n(k), 2k, 2k]  fixed basis
    core.features.layer<l>.hermite_conv.rotate_hermite.Rs.<r>  [n(k), n(k)]    fixed rotations
    core.features.layer<l>.norm.batch_norm.*                   BatchNorm shared by the rotations
    core._input_weights_regularizer.*                          regulariser filter (unused)
    gru_module.gru.{update,reset,out}_gate_{input,hidden}.{weight,bias}
    readout.<mouse>.*, shifter.<mouse>.*                       (see `port_torch.gaussian`)

Our core computes the fixed basis and rotations itself: the saved ones must equal them (else
the filters, and the predictions, would differ). Our GRU keeps one bias per gate: the sum of
the reference's two (both are added before the gate's nonlinearity), and stacks the gates'
kernels ([update | reset | candidate] on the input, [update | reset] on the state).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models.gru import ConvGRU, GRUModel
from sensorium_jax.errors import InputDataError
from sensorium_jax.models.rotation_equivariant import (
    HermiteConv2D,
    RotationEquivariantCore,
    hermite_basis,
    rotation_matrix,
)
from sensorium_jax.port_torch.gaussian import import_readout, import_shifter
from sensorium_jax.port_torch.state_dict import (
    StateDict,
    assign,
    assign_batch_norm,
    batch_norm_stats,
    conv2d_kernel,
    conv2d_shape,
)

REFERENCE = ("neuralpredictors RotationEquivariant2dCore + GRU_Module + FullGaussian2d + MLPShifter "
             "(SENSORIUM 2023 starter kit)")
REGULARIZER_PREFIX = "core._input_weights_regularizer."
BASIS_TOLERANCE = 1e-5  # the reference stores float32 copies of float64 constants
GATES = ("update", "reset", "out")  # our stacking order of the input convolution's outputs
VIDEO_CHANNELS = 1


def import_model(sd: StateDict, model: GRUModel, card: DatasetCard, mice: Sequence[str] | None = None) -> None:
    """Fills a built `GRUModel` (rotation-equivariant core) from the reference's state dict.
    `mice` is not needed: the per-mouse keys carry the mouse names."""
    if not isinstance(model.core, RotationEquivariantCore):
        raise InputDataError("config", "model.core.type", "rotation_equivariant (the reference's core)",
                             type(model.core).__name__)
    import_core(sd, model.core, model.map_scale)
    import_gru(sd, model.gru)
    import_readout(sd, model.readout, card)
    if model.shifter is not None:
        import_shifter(sd, model.shifter, card)
    for key in sd.keys_under(REGULARIZER_PREFIX):
        sd.skip(key)


def import_core(sd: StateDict, core: RotationEquivariantCore, map_scale: float) -> None:
    for l, layer in enumerate(core.features):
        prefix = f"core.features.layer{l}"
        conv = layer.hermite_conv
        coeffs = sd.take(f"{prefix}.hermite_conv.coeffs", conv.coeffs.shape)
        if l == 0:  # our constant maps arrive multiplied by map_scale; the filters are linear in coeffs
            coeffs = coeffs.copy()
            coeffs[:, VIDEO_CHANNELS:, :] /= map_scale
        assign(conv.coeffs, coeffs)
        _check_fixed_basis(sd, conv, f"{prefix}.hermite_conv.rotate_hermite")
        norm = layer.norm
        assign_batch_norm(norm, batch_norm_stats(sd, f"{prefix}.norm.batch_norm", norm.scale.shape[0]))


def _check_fixed_basis(sd: StateDict, conv: HermiteConv2D, prefix: str) -> None:
    """The saved Hermite basis and rotation matrices must be the ones our core computes."""
    basis = hermite_basis(conv.kernel, conv.upsampling)
    _check_close(sd, f"{prefix}.H", basis.functions)
    for r in range(conv.rotations):
        _check_close(sd, f"{prefix}.Rs.{r}", rotation_matrix(basis, 2 * np.pi * r / conv.rotations))


def _check_close(sd: StateDict, key: str, ours: np.ndarray) -> None:
    theirs = sd.take(key, ours.shape)
    worst = float(np.max(np.abs(theirs - ours)))
    if worst > BASIS_TOLERANCE:
        raise InputDataError(sd.source, key, "the Hermite basis and rotations our core computes",
                             f"a difference of {worst:.3g}")


def import_gru(sd: StateDict, gru: ConvGRU) -> None:
    """Six gate convolutions into our stacked kernels; each gate's two biases summed."""
    c = gru.channels
    k_in, _, cin, _ = gru.input_kernel.shape
    k_rec = gru.gate_kernel.shape[0]
    inputs, biases, hidden = [], [], {}
    for gate in GATES:
        p = f"gru_module.gru.{gate}_gate"
        inputs.append(conv2d_kernel(sd.take(f"{p}_input.weight", conv2d_shape((k_in, k_in, cin, c)))))
        hidden[gate] = conv2d_kernel(sd.take(f"{p}_hidden.weight", conv2d_shape((k_rec, k_rec, c, c))))
        biases.append(sd.take(f"{p}_input.bias", (c,)) + sd.take(f"{p}_hidden.bias", (c,)))
    assign(gru.input_kernel, np.concatenate(inputs, axis=-1))
    assign(gru.bias, np.concatenate(biases))
    assign(gru.gate_kernel, np.concatenate([hidden["update"], hidden["reset"]], axis=-1))
    assign(gru.candidate_kernel, hidden["out"])
