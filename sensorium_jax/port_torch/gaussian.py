"""The neuralpredictors Gaussian readout and MLP shifter, per mouse, into our stacked modules.

Reference names (SENSORIUM 2023 starter kit, `MultipleFullGaussian2d` / `MLPShifter`, both
dictionaries keyed by the data set's folder name, which is also our store's mouse name):

    readout.<mouse>._features     [1, C, 1, N]   feature weights
    readout.<mouse>.sigma         [1, N, 2, 2]   (full) or [1, N, 1, 2] (uncorrelated)
    readout.<mouse>.bias          [N]
    readout.<mouse>.source_grid   [N, d]         normalized cortical coordinates
    readout.<mouse>.mu_transform.{0,2,..}.weight/bias   grid-mean predictor (ELU between, tanh last)
    shifter.<mouse>.mlp.{0,2,4}.weight/bias             tanh after every layer

Neurons are matched by their order within a mouse; the state dict's `source_grid` must equal
the store's coordinates normalized the same way, which catches a different neuron order.
"""

from __future__ import annotations

import numpy as np

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.errors import InputDataError
from sensorium_jax.models.readouts import GaussianReadout
from sensorium_jax.models.shifter import MLPShifter, StackedMLP
from sensorium_jax.port_torch.state_dict import StateDict, assign, linear_kernel

COORDINATE_TOLERANCE = 1e-3  # normalized units ([-1, 1]); float32 rounding is ~1e-7


def check_mice(sd: StateDict, prefix: str, card: DatasetCard) -> None:
    """Every store mouse has keys under `prefix.<mouse>.` and no other mouse has any."""
    names = card.names
    for key in sd.keys_under(prefix + "."):
        if not any(key.startswith(f"{prefix}.{name}.") for name in names):
            raise InputDataError(sd.source, key, f"a mouse of the store ({', '.join(names)})", "an unknown mouse")
    for name in names:
        if not sd.keys_under(f"{prefix}.{name}."):
            raise InputDataError(sd.source, f"{prefix}.{name}", "keys for every mouse of the store", "missing")


def import_stacked_mlp(sd: StateDict, mlp: StackedMLP, m: int, prefix: str) -> None:
    """Linear layers at Sequential indices 0, 2, 4, ... (activations between) into row `m`."""
    for j, (kernel, bias) in enumerate(zip(mlp.kernels, mlp.biases)):
        n_in, n_out = kernel.shape[1:]
        assign(kernel, linear_kernel(sd.take(f"{prefix}.{2 * j}.weight", (n_out, n_in))), (m,))
        assign(bias, sd.take(f"{prefix}.{2 * j}.bias", (n_out,)), (m,))


def import_readout(sd: StateDict, readout: GaussianReadout, card: DatasetCard, prefix: str = "readout") -> None:
    """Each store mouse's `FullGaussian2d` into row m (its first N neurons) of our stacked readout."""
    check_mice(sd, prefix, card)
    channels = readout.features.shape[-1]
    for m, mouse in enumerate(card.mice):
        p, n = f"{prefix}.{mouse.name}", mouse.n_neurons
        features = sd.take(f"{p}._features", (1, channels, 1, n))
        assign(readout.features, features[0, :, 0, :].T, (m, slice(0, n)))
        if readout.full_sigma:
            assign(readout.sigma, sd.take(f"{p}.sigma", (1, n, 2, 2))[0], (m, slice(0, n)))
        else:
            assign(readout.sigma, sd.take(f"{p}.sigma", (1, n, 1, 2))[0, :, 0], (m, slice(0, n)))
        assign(readout.bias, sd.take(f"{p}.bias", (n,)), (m, slice(0, n)))
        _import_grid(sd, readout, m, n, f"{p}.source_grid")
        import_stacked_mlp(sd, readout.position_mlp, m, f"{p}.mu_transform")


def _import_grid(sd: StateDict, readout: GaussianReadout, m: int, n: int, key: str) -> None:
    """The reference's source grid, after checking it is the store's coordinates in order."""
    ours = np.asarray(readout.coordinates[...][m, :n])
    grid = sd.take(key, ours.shape)
    worst = float(np.max(np.abs(grid - ours))) if n else 0.0
    if worst > COORDINATE_TOLERANCE:
        raise InputDataError(sd.source, key, "the store's cortical coordinates, normalized, in the store's "
                             "neuron order", f"a difference of {worst:.3g}")
    assign(readout.coordinates, grid, (m, slice(0, n)))


def import_shifter(sd: StateDict, shifter: MLPShifter, card: DatasetCard, prefix: str = "shifter") -> None:
    """Each store mouse's shifter MLP into row m of our stacked one."""
    check_mice(sd, prefix, card)
    for m, mouse in enumerate(card.mice):
        import_stacked_mlp(sd, shifter.mlp, m, f"{prefix}.{mouse.name}.mlp")
