r"""PyTorch checkpoints of the reference implementations in, an orbax workdir out.

    python -m sensorium_jax.port_torch --state-dict model.pt --config configs/factorized_baseline.py \
        --store /data/store --out runs/imported

The config names the model (`model.name`) and its sizes; the state dict must be that model's
reference, key for key and shape for shape (one-line errors naming the key otherwise). Mice
are matched by name (the reference's per-mouse keys against the store's mice), neurons by
their order within a mouse. The file is read with `torch.load(weights_only=True)`: no code in
it runs. torch is needed only here (`pip install 'sensorium_jax[torch]'`).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import ml_collections
from flax import nnx

from sensorium_jax.errors import InputDataError

# model name -> the module mapping its reference's state dict (`import_model`, `REFERENCE`)
MAPPINGS = {
    "factorized": "sensorium_jax.port_torch.factorized",
    "dwiseneuro": "sensorium_jax.port_torch.dwiseneuro",
    "gru": "sensorium_jax.port_torch.gru",
}


def mapping_for(config: ml_collections.ConfigDict) -> ModuleType:
    """The module mapping the reference of `config.model.name`."""
    name = config.model.get("name", "")
    if name not in MAPPINGS:
        raise InputDataError("config", "model.name", f"a model with a PyTorch reference ({', '.join(MAPPINGS)})",
                             repr(name))
    return importlib.import_module(MAPPINGS[name])


def import_checkpoint(state_dict: str | Path, config: ml_collections.ConfigDict, store: str | Path,
                      out: str | Path, mice: Sequence[str] | None = None) -> Path:
    """Imports the state dict at `state_dict` into a new workdir `out` for the mice of `store`;
    returns the checkpoint step folder written. `mice` names the per-mouse entries of a
    reference that indexes them by position (DwiseNeuro's `readouts.<k>`; default: its own order
    of the competition mice)."""
    from sensorium_jax.config_checks import validate_config
    from sensorium_jax.data.datasets import open_training_store
    from sensorium_jax.models import build_model
    from sensorium_jax.port_torch.state_dict import StateDict, read_state_dict
    from sensorium_jax.port_torch.workdir import check_new_workdir, write_workdir

    mapping = mapping_for(config)
    check_new_workdir(out)
    store = Path(store).expanduser().absolute()
    config = copy.deepcopy(config)
    config.data.store = str(store)
    validate_config(config)
    # Normalized as `data.normalization` says (per frame where the source has per-frame
    # statistics, as the reference kit trained), recorded in the card for `load` / evaluate.py.
    card = open_training_store(config.data).card()
    sd = StateDict(read_state_dict(state_dict), state_dict)
    model = build_model(config.model, card, nnx.Rngs(config.get("seed", 0)))
    mapping.import_model(sd, model, card, mice)
    sd.finish()
    provenance = {
        "state_dict": str(Path(state_dict).expanduser().absolute()),
        "sha256": hashlib.sha256(Path(state_dict).read_bytes()).hexdigest(),
        "reference": mapping.REFERENCE,
        "tensors": len(sd.tensors),
    }
    return write_workdir(out, config, card, model, provenance)
