"""Where training data comes from: a converted store, or the synthetic mouse cached on disk.

The synthetic digital mouse is generated and converted once per (preset, seed, mice) into a
cache folder, so `python train.py` works on a fresh machine with nothing downloaded.

A run reads its store through `NormalizedStore`: the store with the run's normalization mode
(`config.data.normalization`), which the pipeline's batches, the dataset card saved with each
checkpoint and the submission all take from it, so training, validation, `evaluate.py` and
`load(...)` normalize identically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import jax
import ml_collections
import numpy as np

from sensorium_jax.data import normalization as norm_lib
from sensorium_jax.data.card import DatasetCard
from sensorium_jax.data.folds import DEFAULT_FOLDS, fold_tiers, uses_folds
from sensorium_jax.data.store import Store

ORACLE_FILE = "synthetic_oracle.json"
# Bumped when the generator's output changes (v2: per-frame statistics, stimulus types), so a
# cache written by an older version is regenerated instead of silently reused.
SYNTHETIC_CACHE_VERSION = 2


def cache_root(configured: str = "") -> Path:
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sensorium_jax"


SYNTHETIC_KINDS = ("video", "static")


def synthetic_store(preset: str, seed: int, mice: int, cache_dir: str = "", kind: str = "video") -> Path:
    """The store of a synthetic preset of `kind` ("video" clips or "static" images), generating
    and converting it on first use."""
    from sensorium_jax.data import synthetic
    from sensorium_jax.data.convert import convert

    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"data.synthetic_kind = {kind!r}: expected one of {', '.join(map(repr, SYNTHETIC_KINDS))}")
    # a video cache keeps its old name, so caches written before the option are reused
    name = (f"{preset}-seed{seed}" + (f"-mice{mice}" if mice else "") + ("-static" if kind == "static" else "")
            + f"-v{SYNTHETIC_CACHE_VERSION}")
    folder = cache_root(cache_dir) / "synthetic" / name
    store_path = folder / "store"
    if (store_path / ORACLE_FILE).exists():
        return store_path
    if jax.process_index() == 0:
        raw = folder / "raw"
        if raw.exists():
            shutil.rmtree(raw)  # a previous attempt stopped half-way
        print(f"Generating the synthetic '{preset}' {kind} data set into {folder} (once) ...")
        sources = synthetic.generate(raw, preset=preset, seed=seed, mice=mice or None, static=kind == "static")
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


# A config written before `data.normalization` existed trained per neuron, the only mode there was.
LEGACY_NORMALIZATION = norm_lib.PER_NEURON


@dataclasses.dataclass(frozen=True)
class FoldSpec:
    """How a store's labelled trials are split into cross-validation folds."""

    n_folds: int = DEFAULT_FOLDS
    labelled: tuple[str, ...] = ("train", "oracle")


class NormalizedStore(Store):
    """A store read in one normalization mode ("auto" resolved per mouse by its statistics)."""

    def __init__(self, path: str | Path, normalization: str = norm_lib.AUTO, folds: FoldSpec | None = None):
        super().__init__(path)
        self.folds = folds
        if folds is not None:  # labelled trials renamed fold_0 .. fold_{n-1}, by stimulus
            for name in self.mice:
                meta = self._meta[name]
                self._meta[name] = dataclasses.replace(meta, tiers=fold_tiers(
                    meta.tiers, meta.stimulus_ids, folds.labelled, folds.n_folds))
        for mouse in self.mice:  # an unknown mode, or per_frame without per-frame statistics: now
            norm_lib.resolve_mode(normalization, self.meta(mouse).statistics_layout, where=self.path / mouse)
        self.normalization_mode = normalization
        self._normalizations: dict[str, norm_lib.Normalization] = {}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_normalizations"] = {}
        return state

    def normalization(self, mouse: str | int) -> norm_lib.Normalization:
        """The mouse's normalization in this store's mode (per-frame statistics read once)."""
        name = self.mouse_name(mouse)
        if name not in self._normalizations:
            self._normalizations[name] = norm_lib.for_store(self, name, self.normalization_mode)
        return self._normalizations[name]

    def card(self, synthetic: bool | None = None) -> DatasetCard:
        """The dataset card, recording the mode and (per frame) the constants of each mouse."""
        base = super().card(synthetic)
        mice = []
        for mouse in base.mice:
            norm = self.normalization(mouse.name)
            mice.append(dataclasses.replace(
                mouse, normalization=norm.mode, frames=norm_lib.frame_constants(norm),
                mean_response=norm_lib.training_mean(self, mouse.name, norm)))
        return dataclasses.replace(base, mice=tuple(mice), normalization=self.normalization_mode)


def normalization_mode(store) -> str:
    """The mode a store's batches are normalized in: a `NormalizedStore`'s, else per neuron (a
    plain store's own card, `Store.card()`, describes per-neuron normalization)."""
    return store.normalization_mode if isinstance(store, NormalizedStore) else norm_lib.PER_NEURON


def mouse_normalization(store, mouse: str | int, mode: str | None = None) -> norm_lib.Normalization:
    """A mouse's normalization in `mode` (default: the store's), cached by a `NormalizedStore`."""
    if isinstance(store, NormalizedStore) and mode in (None, store.normalization_mode):
        return store.normalization(mouse)
    return norm_lib.for_store(store, mouse, mode or normalization_mode(store))


def open_normalized_store(path: str | Path, normalization: str, folds: FoldSpec | None = None) -> NormalizedStore:
    """An existing store read in `normalization` (a card's `normalization` for evaluation)."""
    from sensorium_jax.data.store import open_store

    if not Path(path).is_dir():
        open_store(path)  # raises the store's one-line error for a missing folder
    return NormalizedStore(path, normalization, folds)


def open_training_store(data: ml_collections.ConfigDict, normalization: str | None = None, *,
                        folds: bool = True) -> NormalizedStore:
    """The store `config.data` names (or the synthetic one), in `normalization` (default:
    `data.normalization`; a config without it trained per neuron), its labelled trials split
    into `data.fold`'s folds when one is asked for and `folds` (evaluation scores the tiers as
    stored: `folds=False`)."""
    path = Path(data.store) if data.store else synthetic_store(
        data.synthetic_preset, data.synthetic_seed, data.synthetic_mice, data.cache_dir,
        # a config from before the option used video data, the only kind there was
        data.get("synthetic_kind", "video"),
    )
    mode = normalization or data.get("normalization", LEGACY_NORMALIZATION)
    spec = FoldSpec(int(data.get("n_folds", DEFAULT_FOLDS)), tuple(data.get("fold_tiers", ("train", "oracle")))) \
        if folds and uses_folds(data) else None
    return open_normalized_store(path, mode, spec)


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
