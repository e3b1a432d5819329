"""A trained model bound to its dataset card: NumPy prediction of whole trials, and the pure
function underneath for in-silico work (gradients, optimisation of stimuli).

    predictor.predict(video, behavior, pupil_center, mouse)        # NumPy, whole trials
    predictor.predict(images, behavior, pupil_center, mouse)       # static models: [B, H, W] -> [B, N]
    inputs = predictor.normalize_inputs(video, behavior, pupil_center, mouse)
    predictor.apply(predictor.variables, inputs)                     # pure, jit-able, differentiable
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sensorium_jax.data import normalization as norm_lib
from sensorium_jax.data.card import DatasetCard
from sensorium_jax.data.kinds import as_kind
from sensorium_jax.evaluation.matching import neuron_order
from sensorium_jax.inference.checkpoint import Variables
from sensorium_jax.inference.inputs import WHERE, Inputs, images_as_trials, mouse_index, pipeline_inputs
from sensorium_jax.models.base import ReadoutPositions
from sensorium_jax.models.windows import predict_frames, window_rule

INPUT_KEYS = ("video", "behavior", "pupil_center", "mouse")


class Predictor:
    """A trained model and its dataset card; compiles once per input shape."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, params: nnx.State, rest: nnx.State,
                 graphdef: nnx.GraphDef, source: str = ""):
        self.config = config
        self.card = card
        self.source = source
        self._graphdef = graphdef
        self._variables: Variables = {"params": params, "rest": rest}
        model = self._model(self._variables)
        self.frames_lost: int = int(model.frames_lost())  # clip frames without a prediction
        self.clip_length: int | None = model.clip_length  # a core's one input length, if it has one
        self.pads_start: bool = bool(model.pads_start)  # whether the first frames are predicted on a steady screen
        self._forward = jax.jit(self.apply)

    # -- what the model knows
    @property
    def static(self) -> bool:
        """Whether the model was trained on static images (SENSORIUM 2022): `predict` then
        takes images, one behaviour row per image, and returns one response per image."""
        return not as_kind(self.card.kind).is_video

    @property
    def mice(self) -> tuple[str, ...]:
        return self.card.names

    def neuron_ids(self, mouse: str | int) -> np.ndarray:
        """The unit ids of the mouse's readouts, in the order of `predict`'s last axis."""
        return self.card.mice[mouse_index(self.card, mouse)].unit_ids

    def readout_positions(self) -> ReadoutPositions:
        """Each neuron's readout position [M, Nmax, 2] in screen pixels (NumPy), or why none."""
        positions = self._model(self._variables).readout_positions()
        if positions.pixels is None:
            return positions
        return ReadoutPositions(np.asarray(positions.pixels), positions.reason)

    # -- the pure function
    @property
    def variables(self) -> Variables:
        """The arrays `apply` takes: {"params": parameters (the EMA when training kept one),
        "rest": batch statistics and other non-parameter state}."""
        return self._variables

    def apply(self, variables: Variables, inputs: Inputs) -> jax.Array:
        """Pure: normalized pipeline-layout inputs (see `normalize_inputs`) -> rates [B, T_out,
        Nmax] of the clip's last `T_out = T - frames_lost` frames (eval mode). Models with a
        `clip_length` take clips of exactly that many frames. Jit, grad and vmap freely."""
        model = self._model(variables, copy=True)
        return model({key: inputs[key] for key in INPUT_KEYS}, train=False).astype(jnp.float32)

    def layer_outputs(self, variables: Variables, inputs: Inputs) -> dict[str, jax.Array]:
        """Pure: every submodule's output in one eval-mode `apply`, by module path
        (`core.layers.0`, `core`, `readout`, ...), for probing inner layers (the atlas, in-silico
        work). Only the model's own call runs, so any model of the contract has them; outputs
        without the batch as leading axis (positions, sizes) are left out; outputs of a core
        that folds the frames into the batch ([B * T, ...], per-frame 2D cores) are unfolded to
        [B, T, ...]."""
        model = self._model(variables, copy=True)
        batch = {key: inputs[key] for key in INPUT_KEYS}
        _, captured = nnx.capture(lambda m, b: m(b, train=False), nnx.Intermediate,
                                  method_outputs=nnx.Intermediate)(model, batch)
        size, frames = jnp.shape(inputs["video"])[:2]
        outputs = {}
        for path, value in nnx.to_flat_state(captured):
            if path[-1] != "__call__":
                continue
            name = ".".join(map(str, path[:-1])) or "output"
            for array in jax.tree.leaves(value.get_value()):
                if jnp.ndim(array) < 2:
                    continue
                if jnp.shape(array)[0] == size:
                    outputs[name] = array
                elif frames > 1 and jnp.shape(array)[0] == size * frames:
                    outputs[name] = jnp.reshape(array, (size, frames, *jnp.shape(array)[1:]))
        return outputs

    def normalize_inputs(self, video: Any, behavior: Any, pupil_center: Any, mouse: str | int) -> Inputs:
        """Raw recordings (NumPy or JAX, one trial or a batch) -> `apply`'s inputs."""
        return pipeline_inputs(self.card, video, behavior, pupil_center, mouse)

    # -- whole trials in NumPy
    def predict_normalized(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Pipeline-layout batch (normalized, video [B, T, H, W, 1]) -> [B, T, Nmax] for every frame,
        in the units of the pipeline's responses for this model's normalization (raw for a model
        trained with `data.normalization="none"`; `predict` and submissions convert).

        `batch["mouse"]` is the mouse's index in this model's card, not a store's: a store's
        eval batches go through `evaluation.matching` (by name and unit id) first.

        The first frames are predicted by repeating the first input frame before the clip (a
        steady screen), so the output covers the whole trial, unless the model says the padding
        would change its other frames' predictions (`pads_start` False: its first `frames_lost`
        frames are NaN, as in the trainer's validation); cores with a fixed clip length slide
        over the trial in windows, combined by the model's `window_inference` rule.
        """
        inputs = {key: batch[key] for key in ("video", "behavior", "pupil_center")}
        inputs["mouse"] = np.asarray(batch["mouse"], np.int32)
        return predict_frames(
            lambda clip: self._forward(self._variables, clip), inputs,
            frames_lost=self.frames_lost, clip_length=self.clip_length, pad_start=self.pads_start,
            rule=window_rule(self.config.model),
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
        unit_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        """One trial (video [T, H, W]) -> [T, N]; a batch ([B, T, H, W]) -> [B, T, N].

        A static (image) model (`static`) takes images instead: one image ([H, W], behavior
        [3], pupil_center [2]) -> [N]; a batch ([B, H, W], [B, 3], [B, 2]) -> [B, N].

        Neurons are in the order of `neuron_ids(mouse)`, or of `unit_ids` when given (matched
        by id: a reordering or subset of the mouse's; unknown ids are refused). Responses are in
        normalized units (divided by the response std, per frame when the model was trained per
        frame; a model trained on raw responses has its predictions divided likewise, per frame
        when its source had per-frame statistics), or recorded units with `raw_units`. A model
        that does not pad the start (`pads_start` False) leaves its first `frames_lost` frames NaN.
        Non-finite inputs and mismatched shapes are refused with one line (`InputDataError`).
        """
        video, behavior, pupil_center = (np.asarray(a, np.float32) for a in (video, behavior, pupil_center))
        images = self.static
        single = np.ndim(video) == (2 if images else 3)
        if images:  # one-frame trials, as the model was trained
            video, behavior, pupil_center = images_as_trials(self.card, video, behavior, pupil_center)
        m = self.card.mice[mouse_index(self.card, mouse)]
        columns = np.arange(m.n_neurons) if unit_ids is None else neuron_order(
            m.unit_ids, unit_ids, where=WHERE, mouse=m.name)
        batch = pipeline_inputs(self.card, video, behavior, pupil_center, mouse, normalize=not normalized_inputs)
        out = self.predict_normalized(batch)[..., columns]
        out = convert_units(out, norm_lib.from_card(m), columns, raw_units=raw_units)
        if images:
            out = out[:, 0]  # [B, 1, N] -> [B, N]
        return out[0] if single else out

    def _model(self, variables: Variables, *, copy: bool = False) -> nnx.Module:
        return nnx.merge(self._graphdef, variables["params"], variables["rest"], copy=copy)


def convert_units(predictions: np.ndarray, norm: norm_lib.Normalization, columns: np.ndarray, *,
                  raw_units: bool) -> np.ndarray:
    """Predictions [..., T, N] of whole trials (from frame 0) in the model's training units ->
    normalized units, or recorded units with `raw_units` (per frame with a per-frame `norm`)."""
    if norm.applied != raw_units:
        return predictions
    norm = norm.window(0, predictions.shape[-2], where=WHERE)
    if raw_units:
        return predictions * norm.response_scale[..., columns]
    return predictions * norm.response_precision[..., columns]
