"""The dataset card: what a model needs to know about its data, saved with every checkpoint.

A checkpoint carrying its card can be loaded for inference without the training data on disk.
It records the normalization the model was trained with (`data.normalization`, resolved per
mouse), and for a per-frame one its constants per frame, so `load(...)` normalizes raw
recordings exactly as the pipeline did. Per-frame arrays are written as base64 float32 (exact,
a third of the size of JSON numbers); a card written before the mode existed reads as
"per_neuron", the only mode there was.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class MouseCard:
    """One mouse: its neurons and the statistics used to normalize its inputs and outputs."""

    name: str
    unit_ids: np.ndarray  # int64 [N]
    coordinates: np.ndarray  # float32 [N, 3], cortical position in microns
    mean_response: np.ndarray  # float32 [N], training-tier mean in normalized units
    response_scale: np.ndarray  # float32 [N], raw = normalized * response_scale
    video_mean: float
    video_std: float
    behavior_scale: np.ndarray  # float32 [k], normalized = raw / behavior_scale
    pupil_mean: np.ndarray  # float32 [2]
    pupil_std: np.ndarray  # float32 [2]
    normalization: str = "per_neuron"  # the resolved mode: "per_neuron", "per_frame" or "none"
    # Per-frame constants, frames first (`normalization.FRAME_FIELDS`), when the mode is
    # "per_frame" (or "none" on a per-frame source: what submissions divide by); else None.
    frames: dict[str, np.ndarray] | None = None

    @property
    def n_neurons(self) -> int:
        return int(self.unit_ids.shape[0])


@dataclasses.dataclass(frozen=True)
class DatasetCard:
    """All mice of a data set in a fixed order; a mouse's index is its id in batches."""

    mice: tuple[MouseCard, ...]
    frame_shape: tuple[int, int]  # (H, W)
    behavior_dim: int
    kind: str = "video"  # "video" (2023) or "static" (2022)
    synthetic: bool = False
    normalization: str = "per_neuron"  # as requested (`data.normalization`); each mouse's resolved mode

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.mice)

    @property
    def n_neurons(self) -> tuple[int, ...]:
        return tuple(m.n_neurons for m in self.mice)

    @property
    def max_neurons(self) -> int:
        return max(self.n_neurons)

    def index(self, mouse: str | int) -> int:
        if isinstance(mouse, (int, np.integer)):
            if not 0 <= int(mouse) < len(self.mice):
                raise KeyError(f"mouse index {mouse} out of range 0..{len(self.mice) - 1}")
            return int(mouse)
        try:
            return self.names.index(mouse)
        except ValueError:
            raise KeyError(f"unknown mouse {mouse!r}; known: {', '.join(self.names)}") from None

    def to_json(self, frames_file: str | None = None) -> str:
        """The card as JSON. With `frames_file` (the run's full card, `CARD_FILE`), per-frame
        constants are referenced by that file's name and their digest instead of written out:
        every checkpoint then carries a few kB, not the release's ~15 MB per mouse."""
        raw = dataclasses.asdict(self)
        for mouse in raw["mice"]:
            if mouse["frames"] is not None:
                encoded = {name: encode_array(value) for name, value in mouse["frames"].items()}
                mouse["frames"] = encoded if frames_file is None else \
                    {"file": frames_file, "sha256": frames_digest(encoded)}
        return json.dumps(_to_jsonable(raw))

    @classmethod
    def from_json(cls, text: str, folder: str | Path | None = None) -> "DatasetCard":
        """Inverse of `to_json`; referenced per-frame constants are read from `folder`."""
        raw = json.loads(text)
        full_cards: dict[Path, dict] = {}
        mice = []
        for m in raw["mice"]:
            mice.append(
                MouseCard(
                    name=m["name"],
                    unit_ids=np.asarray(m["unit_ids"], np.int64),
                    coordinates=np.asarray(m["coordinates"], np.float32).reshape(-1, 3),
                    mean_response=np.asarray(m["mean_response"], np.float32),
                    response_scale=np.asarray(m["response_scale"], np.float32),
                    video_mean=float(m["video_mean"]),
                    video_std=float(m["video_std"]),
                    behavior_scale=np.asarray(m["behavior_scale"], np.float32),
                    pupil_mean=np.asarray(m["pupil_mean"], np.float32),
                    pupil_std=np.asarray(m["pupil_std"], np.float32),
                    normalization=str(m.get("normalization", "per_neuron")),
                    frames=_frames(m, folder, full_cards),
                )
            )
        return cls(
            mice=tuple(mice),
            frame_shape=tuple(raw["frame_shape"]),
            behavior_dim=int(raw["behavior_dim"]),
            kind=raw["kind"],
            synthetic=bool(raw["synthetic"]),
            normalization=str(raw.get("normalization", "per_neuron")),
        )


CARD_FILE = "dataset_card.json"  # the full card a run writes once into its workdir


def frames_digest(encoded: dict[str, Any]) -> str:
    """sha256 of a mouse's encoded per-frame constants (what a referencing card checks)."""
    return hashlib.sha256(json.dumps(encoded, sort_keys=True).encode()).hexdigest()


def _frames(mouse: dict, folder: str | Path | None, full_cards: dict[Path, dict]) -> dict[str, np.ndarray] | None:
    """A mouse's per-frame constants: written in the card, or referenced in the run's full card."""
    value = mouse.get("frames")
    if value is None:
        return None
    if "file" in value:
        value = _referenced_frames(mouse["name"], value, folder, full_cards)
    return {name: decode_array(array) for name, array in value.items()}


def _referenced_frames(name: str, reference: dict, folder: str | Path | None, full_cards: dict[Path, dict]) -> dict:
    from sensorium_jax.errors import InputDataError

    if folder is None:
        raise InputDataError("dataset_card", f"{name}.frames", f"the run's {reference['file']} beside its checkpoints",
                             "no run folder")
    path = Path(folder) / reference["file"]
    if path not in full_cards:
        if not path.is_file():
            raise InputDataError(path, f"{name}.frames", "the run's full dataset card (per-frame constants)",
                                 "no such file")
        full_cards[path] = json.loads(path.read_text())
    entry = next((m for m in full_cards[path]["mice"] if m["name"] == name), None)
    frames = None if entry is None else entry.get("frames")
    if frames is None or "file" in frames or frames_digest(frames) != reference["sha256"]:
        raise InputDataError(path, f"{name}.frames", "the per-frame constants the checkpoint was trained with "
                             f"(sha256 {reference['sha256'][:12]}...)", "other constants")
    return frames


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """A float32 array as JSON: shape and little-endian bytes in base64 (exact and compact)."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(array.shape), "float32_base64": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_array(value: dict[str, Any]) -> np.ndarray:
    """Inverse of `encode_array`."""
    data = np.frombuffer(base64.b64decode(value["float32_base64"]), dtype="<f4")
    return data.reshape(value["shape"]).astype(np.float32)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
