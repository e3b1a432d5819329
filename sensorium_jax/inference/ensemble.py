"""The mean of separately trained models (`evaluate.py --ensemble`), with a Predictor's API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.errors import InputDataError
from sensorium_jax.inference.checkpoint import Variables
from sensorium_jax.inference.inputs import Inputs
from sensorium_jax.inference.predictor import Predictor
from sensorium_jax.models.base import ReadoutPositions


def card_difference(first: DatasetCard, other: DatasetCard) -> str:
    """Pure: the first way `other`'s mice or neurons differ from `first`'s ("" if none)."""
    if other.names != first.names:
        return f"mice {', '.join(other.names)} instead of {', '.join(first.names)}"
    for a, b in zip(first.mice, other.mice):
        if not np.array_equal(a.unit_ids, b.unit_ids):
            return f"other unit ids for mouse {a.name} ({b.n_neurons} neurons, {a.n_neurons} expected)"
        if a.normalization != b.normalization:  # inputs and outputs in other units: no common mean
            return f"normalization {b.normalization!r} for mouse {a.name} ({a.normalization!r} expected)"
    return ""


class EnsemblePredictor:
    """The mean prediction of several predictors trained on the same mice and neurons."""

    def __init__(self, members: Sequence[Predictor]):
        """Members must share mice and unit ids in the same order: their readouts are averaged
        column by column, so any difference would mix different neurons."""
        if not members:
            raise InputDataError("--ensemble", "members", "at least one model", "none")
        first = members[0]
        for other in members[1:]:
            difference = card_difference(first.card, other.card)
            if difference:
                raise InputDataError(other.source, "dataset_card", f"the mice and neurons of {first.source}",
                                     difference)
        self.members = tuple(members)
        self.card = first.card
        self.config = first.config
        self.source = ",".join(m.source for m in members)

    mice = Predictor.mice
    static = Predictor.static
    neuron_ids = Predictor.neuron_ids
    normalize_inputs = Predictor.normalize_inputs

    def readout_positions(self) -> ReadoutPositions:
        """The members' mean positions; the first member's reason when one has none."""
        each = [m.readout_positions() for m in self.members]
        missing = next((p for p in each if p.pixels is None), None)
        if missing is not None:
            return missing
        return ReadoutPositions(np.mean([p.pixels for p in each], axis=0))

    @property
    def variables(self) -> tuple[Variables, ...]:
        return tuple(m.variables for m in self.members)

    def apply(self, variables: Sequence[Variables], inputs: Inputs) -> jax.Array:
        """Pure: the members' mean over the frames all of them predict (the clip's last ones)."""
        outs = [m.apply(v, inputs) for m, v in zip(self.members, variables, strict=True)]
        frames = min(out.shape[1] for out in outs)
        return jnp.mean(jnp.stack([out[:, out.shape[1] - frames:] for out in outs]), axis=0)

    def predict_normalized(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.mean([m.predict_normalized(batch) for m in self.members], axis=0)

    def predict(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return np.mean([m.predict(*args, **kwargs) for m in self.members], axis=0)
