"""Inference from checkpoints: `model = sensorium_jax.load(path)`; `model.predict(...)`.

A checkpoint carries its config and dataset card, so no training data is needed. Inputs are
raw recordings (video 0-255, behaviour and pupil center in recorded units) unless told
they are already normalized; outputs are responses in the normalized units the metrics use,
or in recorded units with `raw_units=True`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.errors import InputDataError
from sensorium_jax.models import build_model
from sensorium_jax.models.windows import predict_frames
from sensorium_jax.training.schedules import learning_rate_schedule, make_optimizer
from sensorium_jax.training.state import abstract_like, create_train_state, uses_ema


def resolve_checkpoint(path: str | Path) -> Path:
    """A workdir (its best, else latest, checkpoint), a manager folder, or one step folder."""
    path = Path(path)
    if (path / "state").is_dir() and (path / "meta").is_dir():
        return path
    for candidate in (path / "checkpoints" / "best", path / "checkpoints" / "latest", path):
        steps = sorted((p for p in candidate.glob("*") if p.name.isdigit() and (p / "state").is_dir()),
                       key=lambda p: int(p.name)) if candidate.is_dir() else []
        if steps:
            return steps[-1]
    raise InputDataError(path, "checkpoint", "a workdir with checkpoints/best or a checkpoint step folder",
                         "no finished checkpoint")


def read_checkpoint_meta(checkpoint: Path) -> dict:
    meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(checkpoint / "meta")
    for key in ("config", "dataset_card"):
        if key not in meta:
            raise InputDataError(checkpoint / "meta", key, "the training config and dataset card", "missing")
    return meta


class Predictor:
    """A trained model bound to its dataset card; compiles once per input shape."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, params, rest, graphdef, source: str = ""):
        self.config = config
        self.card = card
        self.source = source
        self._graphdef = graphdef
        self._params = params
        self._rest = rest
        model = nnx.merge(graphdef, params, rest)
        self.frames_lost = int(model.frames_lost(None)) if hasattr(model, "frames_lost") else 0
        self.clip_length = getattr(model, "clip_length", None)  # cores with a fixed input length
        self._forward = jax.jit(self._forward_impl)

    # -- what the model knows
    @property
    def mice(self) -> tuple[str, ...]:
        return self.card.names

    def neuron_ids(self, mouse: str | int) -> np.ndarray:
        return self.card.mice[self.card.index(mouse)].unit_ids

    def readout_positions(self) -> np.ndarray | None:
        """Learned mean readout positions [M, Nmax, 2] in [-1, 1] (x, y), when the readout has them."""
        model = nnx.merge(self._graphdef, self._params, self._rest)
        if hasattr(model, "readout_positions"):
            positions = model.readout_positions()
            return None if positions is None else np.asarray(positions)
        readout = getattr(model, "readout", None)
        return np.asarray(readout.positions()) if hasattr(readout, "positions") else None

    # -- prediction
    def _forward_impl(self, params, rest, batch):
        model = nnx.merge(self._graphdef, params, rest, copy=True)
        return model(batch, train=False).astype(jnp.float32)

    def predict_normalized(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Pipeline-layout batch (normalized, video [B, T, H, W, 1]) -> [B, T, Nmax] for every frame.

        The first frames are predicted by repeating the first input frame before the clip (a
        steady screen), so the output covers the whole trial; cores with a fixed clip length
        slide over the trial in windows.
        """
        inputs = {key: batch[key] for key in ("video", "behavior", "pupil_center")}
        inputs["mouse"] = np.asarray(batch["mouse"], np.int32)
        return predict_frames(
            lambda clip: self._forward(self._params, self._rest, clip), inputs,
            frames_lost=self.frames_lost, clip_length=self.clip_length, pad_start=True,
        )

    def predict(
        self,
        video: np.ndarray,
        behavior: np.ndarray,
        pupil_center: np.ndarray,
        mouse: str | int,
        *,
        raw_units: bool = False,
        normalized_inputs: bool = False,
    ) -> np.ndarray:
        """One trial (video [T, H, W]) -> [T, N]; a batch ([B, T, H, W]) -> [B, T, N]."""
        video = np.asarray(video, np.float32)
        single = video.ndim == 3
        if single:
            video, behavior, pupil_center = video[None], np.asarray(behavior)[None], np.asarray(pupil_center)[None]
        behavior = np.asarray(behavior, np.float32)
        pupil_center = np.asarray(pupil_center, np.float32)
        index = self.card.index(mouse)
        m = self.card.mice[index]
        b, t = video.shape[:2]
        expected = {"video": (b, t, *self.card.frame_shape), "behavior": (b, t, self.card.behavior_dim),
                    "pupil_center": (b, t, 2)}
        for name, array in (("video", video), ("behavior", behavior), ("pupil_center", pupil_center)):
            if array.shape != expected[name]:
                raise InputDataError("predict", name, f"shape {expected[name]} (time-major)", array.shape)
        if not normalized_inputs:
            video = (video - m.video_mean) / m.video_std
            behavior = behavior / m.behavior_scale
            pupil_center = (pupil_center - m.pupil_mean) / m.pupil_std
        batch = {"video": video[..., None], "behavior": behavior, "pupil_center": pupil_center,
                 "mouse": np.full((b,), index, np.int32)}
        out = self.predict_normalized(batch)[..., : m.n_neurons]
        if raw_units:
            out = out * m.response_scale
        return out[0] if single else out


class EnsemblePredictor:
    """The mean prediction of several predictors trained on the same mice and neurons."""

    def __init__(self, members: Sequence[Predictor]):
        first = members[0]
        for other in members[1:]:
            if other.card.names != first.card.names or other.card.n_neurons != first.card.n_neurons:
                raise InputDataError(other.source, "dataset_card", f"the mice and neurons of {first.source}",
                                     "a different data set")
        self.members = tuple(members)
        self.card = first.card
        self.config = first.config
        self.source = ",".join(m.source for m in members)

    mice = Predictor.mice
    neuron_ids = Predictor.neuron_ids

    def readout_positions(self) -> np.ndarray | None:
        return self.members[0].readout_positions()

    def predict_normalized(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.mean([m.predict_normalized(batch) for m in self.members], axis=0)

    def predict(self, *args, **kwargs) -> np.ndarray:
        return np.mean([m.predict(*args, **kwargs) for m in self.members], axis=0)


def load(path: str | Path) -> Predictor:
    """Loads a trained model from a workdir or checkpoint folder, without the training data."""
    checkpoint = resolve_checkpoint(path)
    meta = read_checkpoint_meta(checkpoint)
    config = ml_collections.ConfigDict(meta["config"])
    card = DatasetCard.from_json(json.dumps(meta["dataset_card"]))
    model = build_model(config.model, card, nnx.Rngs(config.get("seed", 0)))
    tx = make_optimizer(config.optimizer, learning_rate_schedule(config.schedule, int(config.train.steps)))
    graphdef, state = create_train_state(model, tx, ema=uses_ema(config))
    restored = ocp.StandardCheckpointer().restore(checkpoint / "state", abstract_like(state))
    return Predictor(config, card, restored.inference_params, restored.rest, graphdef, source=str(checkpoint))
