"""The SENSORIUM 2023 starter kit's factorized baseline (`make_video_model` with
`core_type="3D_factorised"`, Gaussian readout, MLP shifter) into `models.factorized`.

Reference names (neuralpredictors `Factorized3dCore` inside `VideoFiringRateEncoder`):

    core.features.layer0.conv_spatial.weight     [C0, Cin, 1, k, k]   (+ .bias)
    core.features.layer0.conv_temporal.weight    [C0, C0, kt, 1, 1]   (+ .bias)
    core.features.layer0.norm.{weight,bias,running_mean,running_var,num_batches_tracked}
    core.features.layer<i>.conv_spatial_<i> / conv_temporal_<i> / norm   for i >= 1
    core._input_weight_regularizer.*, core.temporal_regularizer.*   (regulariser filters: unused)
    readout.<mouse>.*, shifter.<mouse>.*                               (see `port_torch.gaussian`)

Our convolutions have no bias (BatchNorm follows): the reference's two biases of a layer are
folded into the BatchNorm running mean, exact in evaluation. Our first layer sees the behaviour
(and pupil) maps multiplied by `map_scale`; the reference sees them unscaled, so those input
channels' weights are divided by it. Which spatial padding the reference used (`padding=True`
in the starter kit's demo: "SAME") is not in the state dict: the config says it
(`model.core.spatial_padding`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models.cores import Factorized3dCore, FactorizedLayer
from sensorium_jax.models.factorized import FactorizedModel
from sensorium_jax.port_torch.gaussian import import_readout, import_shifter
from sensorium_jax.port_torch.state_dict import (
    StateDict,
    assign,
    assign_batch_norm,
    batch_norm_stats,
    conv3d_kernel,
    conv3d_shape,
)

REFERENCE = "neuralpredictors Factorized3dCore + FullGaussian2d + MLPShifter (SENSORIUM 2023 starter kit)"
REGULARIZER_PREFIXES = ("core._input_weight_regularizer.", "core.temporal_regularizer.")
VIDEO_CHANNELS = 1  # the video comes first in the input channels, the constant maps after it


def import_model(sd: StateDict, model: FactorizedModel, card: DatasetCard, mice: Sequence[str] | None = None) -> None:
    """Fills a built `FactorizedModel` from the reference's state dict (keys checked). `mice` is
    not needed: the reference's per-mouse keys carry the mouse names."""
    import_core(sd, model.core, model.map_scale)
    import_readout(sd, model.readout, card)
    if model.shifter is not None:
        import_shifter(sd, model.shifter, card)
    for prefix in REGULARIZER_PREFIXES:
        for key in sd.keys_under(prefix):
            sd.skip(key)


def import_core(sd: StateDict, core: Factorized3dCore, map_scale: float) -> None:
    """Layer i of the reference's `features` into our layer i."""
    for i, layer in enumerate(core.layers):
        import_layer(sd, layer, f"core.features.layer{i}", "" if i == 0 else f"_{i}",
                     map_scale if i == 0 else None)


def import_layer(sd: StateDict, layer: FactorizedLayer, prefix: str, suffix: str,
                 map_scale: float | None) -> None:
    """Spatial and temporal kernels, their biases folded into the BatchNorm mean."""
    spatial_shape, temporal_shape = tuple(layer.spatial.shape), tuple(layer.temporal.shape)
    out = spatial_shape[-1]
    spatial = conv3d_kernel(sd.take(f"{prefix}.conv_spatial{suffix}.weight", conv3d_shape(spatial_shape)))
    spatial_bias = sd.take(f"{prefix}.conv_spatial{suffix}.bias", (out,))
    temporal_weight = sd.take(f"{prefix}.conv_temporal{suffix}.weight", conv3d_shape(temporal_shape))
    temporal_bias = sd.take(f"{prefix}.conv_temporal{suffix}.bias", (out,))
    if map_scale is not None:  # our constant maps arrive multiplied by map_scale
        spatial = spatial.copy()
        spatial[..., VIDEO_CHANNELS:, :] /= map_scale
    assign(layer.spatial, spatial)
    assign(layer.temporal, conv3d_kernel(temporal_weight))
    # a constant spatial bias b passes the temporal convolution as sum over taps of W . b
    offset = temporal_bias + np.einsum("oit,i->o", temporal_weight[:, :, :, 0, 0], spatial_bias)
    assign_batch_norm(layer.norm, batch_norm_stats(sd, f"{prefix}.norm", out), offset)
