"""Where training data comes from: a converted store, or the synthetic mouse cached on disk.

The synthetic digital mouse is generated and converted once per (preset, seed, mice) into a
cache folder, so `python train.py` works on a fresh machine with nothing downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import ml_collections
import numpy as np

ORACLE_FILE = "synthetic_oracle.json"
# Bumped when the generator's output changes (v2: per-frame statistics, stimulus types), so a
# cache written by an older version is regenerated instead of silently reused.
SYNTHETIC_CACHE_VERSION = 2


def cache_root(configured: str = "") -> Path:
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sensorium_jax"


def synthetic_store(preset: str, seed: int, mice: int, cache_dir: str = "") -> Path:
    """The store of a synthetic preset, generating and converting it on first use."""
    from sensorium_jax.data import synthetic
    from sensorium_jax.data.convert import convert

    name = f"{preset}-seed{seed}" + (f"-mice{mice}" if mice else "") + f"-v{SYNTHETIC_CACHE_VERSION}"
    folder = cache_root(cache_dir) / "synthetic" / name
    store_path = folder / "store"
    if (store_path / ORACLE_FILE).exists():
        return store_path
    if jax.process_index() == 0:
        raw = folder / "raw"
        if raw.exists():
            shutil.rmtree(raw)  # a previous attempt stopped half-way
        print(f"Generating the synthetic '{preset}' data set into {folder} (once) ...")
        sources = synthetic.generate(raw, preset=preset, seed=seed, mice=mice or None)
        convert(sources, store_path)
        write_oracle_summary(sources, store_path)
        shutil.rmtree(raw)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"synthetic store {name}")
    return store_path


def write_oracle_summary(sources: list[Path], store_path: Path) -> None:
    """Copies each synthetic mouse's ground-truth ceiling next to the store, written last."""
    summary = {}
    for source in sources:
        truth = Path(source) / "ground_truth"
        if (truth / "oracle.json").exists():
            entry = json.loads((truth / "oracle.json").read_text())
            if (truth / "receptive_fields.npz").exists():
                with np.load(truth / "receptive_fields.npz") as fields:
                    entry["rf_position_px"] = fields["position"].tolist()  # (x, y) screen pixels
            summary[Path(source).name] = entry
    if summary:
        temporary = store_path / (ORACLE_FILE + ".tmp")
        temporary.write_text(json.dumps(summary, indent=2))
        temporary.replace(store_path / ORACLE_FILE)


def open_training_store(data: ml_collections.ConfigDict):
    from sensorium_jax.data.store import open_store

    path = Path(data.store) if data.store else synthetic_store(
        data.synthetic_preset, data.synthetic_seed, data.synthetic_mice, data.cache_dir
    )
    return open_store(path)


def synthetic_truth(store) -> dict | None:
    """The synthetic data's ground truth summary (ceilings, RF positions), or None."""
    path = Path(store.path) / ORACLE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def oracle_ceiling(store, tier: str, metric: str = "single_trial_correlation") -> float | None:
    """Neuron-weighted mean ceiling over the store's mice, when the data is synthetic."""
    summary = synthetic_truth(store)
    if summary is None:
        return None
    total, weight = 0.0, 0
    for mouse in store.mice:
        entry = summary.get(mouse, {}).get(tier)
        if entry is None:
            return None
        n_neurons = store.meta(mouse).n_neurons
        total += entry[metric] * n_neurons
        weight += n_neurons
    return total / weight if weight else None
