"""Evaluators: one metric each, found by name, fed by one pass over a tier's predictions.

An evaluator is a streaming accumulator, `init(info) -> state`, `update(state, batch,
predictions, mask) -> state`, `result(state) -> EvalResult`, so the tier loop
(`evaluation.scoring.score_tier`) predicts each batch once and hands it to every evaluator of
the tier. Adding a metric is one subclass registered with `@register_evaluator("name")`;
the trainer's validation and evaluate.py both find it by that name.

Results are named per-neuron arrays plus `summarize(per_neuron)`, the evaluator's own rule
for pooling them into scalars; applied to one mouse's arrays it gives the per-mouse score,
applied to the arrays of all mice concatenated it gives the score pooled over all neurons.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Union

import numpy as np

from sensorium_jax import metrics
from sensorium_jax.data.kinds import DatasetKind

Pooled = dict[str, Union[float, dict[str, float]]]


@dataclasses.dataclass(frozen=True)
class TierInfo:
    """What an evaluator knows about a (mouse, tier) before its first batch."""

    mouse: str
    tier: str
    kind: DatasetKind
    n_neurons: int
    n_frames: int  # the tier's longest trial: every batch is padded to it
    trials: np.ndarray  # int64 [trials of the tier], indices within the mouse
    stimulus_slot: np.ndarray  # int32 [S_mouse]: dense stimulus index -> slot 0..n_stimuli-1 (-1: not in tier)
    n_stimuli: int
    stimulus_types: np.ndarray  # str [trials of the mouse], "unknown" where the source does not say

    @property
    def repeated(self) -> bool:
        return self.tier in self.kind.repeated_tiers

    @property
    def bonus(self) -> bool:
        return self.tier in self.kind.bonus_tiers


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Named per-neuron values (float32 [N] each) and their pooled scalars."""

    per_neuron: dict[str, np.ndarray]
    pooled: Pooled


class Evaluator(abc.ABC):
    """A metric as a streaming accumulator over the batches of one (mouse, tier).

    `update` gets the batch (responses [B, T, N] finite, zero where masked), predictions
    [B, T, N] (finite) and the bool mask [B, T] of the frames that count (valid, after the
    burn-in, predicted by the model). States are values: always use the returned one.
    """

    name: ClassVar[str] = ""
    primary: ClassVar[str] = ""  # the pooled value that is "the" score (validation, best checkpoint)

    def applies_to(self, info: TierInfo) -> bool:
        """Whether this metric is defined on the tier (default: every scored tier)."""
        return True

    @abc.abstractmethod
    def init(self, info: TierInfo) -> Any:
        """The empty state for the tier."""

    @abc.abstractmethod
    def update(self, state: Any, batch: Mapping[str, np.ndarray], predictions: np.ndarray, mask: np.ndarray) -> Any:
        """The state with one more batch of trials."""

    @abc.abstractmethod
    def per_neuron(self, state: Any) -> dict[str, np.ndarray]:
        """Named float32 [N] values of the finished state."""

    def summarize(self, per_neuron: Mapping[str, np.ndarray]) -> Pooled:
        """Scalars of (possibly several mice's concatenated) per-neuron values: their means."""
        return {key: float(values.mean()) for key, values in per_neuron.items()}

    def result(self, state: Any) -> EvalResult:
        values = self.per_neuron(state)
        return EvalResult(values, self.summarize(values))

    def pool(self, results: Sequence[EvalResult]) -> Pooled:
        """Pooled over all neurons of all the given results (mice): concatenate, summarize."""
        keys: list[str] = []
        for r in results:
            keys += [k for k in r.per_neuron if k not in keys]
        merged = {k: np.concatenate([r.per_neuron[k] for r in results if k in r.per_neuron]) for k in keys}
        return self.summarize(merged)


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[[], Evaluator]] = {}


def register_evaluator(name: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
    """Class decorator: makes the evaluator available as `get_evaluator(name)`."""

    def add(cls: type[Evaluator]) -> type[Evaluator]:
        if name in _REGISTRY:
            raise ValueError(f"evaluator {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def evaluator_names() -> tuple[str, ...]:
    """Every registered evaluator, in registration order."""
    return tuple(_REGISTRY)


def get_evaluator(name: str) -> Evaluator:
    """A fresh evaluator registered as `name`; a clear error for anything else."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown evaluator {name!r}; known: {', '.join(_REGISTRY)}") from None


def get_evaluators(names: Sequence[str] | None = None) -> dict[str, Evaluator]:
    """Evaluators by name (None: all registered)."""
    return {name: get_evaluator(name) for name in (evaluator_names() if names is None else names)}


# ----------------------------------------------------------------------------- the metrics


@register_evaluator("single_trial")
class SingleTrialCorrelation(Evaluator):
    """Pearson per neuron over all (trial, frame) pairs: the SENSORIUM 2023 main metric."""

    primary = "single_trial_correlation"

    def init(self, info: TierInfo) -> metrics.CorrelationStats:
        return metrics.init_correlation_stats(info.n_neurons)

    def update(self, state, batch, predictions, mask):
        return metrics.update_correlation_stats(state, batch["responses"], predictions, mask)

    def per_neuron(self, state) -> dict[str, np.ndarray]:
        return {self.primary: np.asarray(metrics.correlation_from_stats(state))}


@register_evaluator("to_average")
class CorrelationToAverage(Evaluator):
    """Pearson per neuron between repeat-averaged responses and predictions over (stimulus, frame)."""

    primary = "correlation_to_average"

    def init(self, info: TierInfo) -> tuple[metrics.RepeatStats, np.ndarray]:
        stats = metrics.init_repeat_stats(max(info.n_stimuli, 1), max(info.n_frames, 1), info.n_neurons)
        return stats, info.stimulus_slot

    def update(self, state, batch, predictions, mask):
        stats, slot_of = state
        slots = slot_of[np.asarray(batch["stimulus"])].astype(np.int32)
        return metrics.update_repeat_stats(stats, batch["responses"], predictions, slots, mask), slot_of

    def per_neuron(self, state) -> dict[str, np.ndarray]:
        return {self.primary: np.asarray(metrics.correlation_to_average_from_stats(state[0]))}


@register_evaluator("feve")
class FractionOfExplainableVarianceExplained(Evaluator):
    """FEVE on tiers of repeated stimuli (`metrics.feve`'s streaming kernel).

    A repeat cell is one (stimulus, frame): noise variance is the mean over cells of the
    variance across repeats, total variance that of all single-trial responses, both over
    cells seen at least twice. Static data (one frame) is the SENSORIUM 2022 definition; the
    pooled FEVE is the mean over neurons whose explainable fraction FEV reaches `threshold`.
    """

    primary = "feve"
    threshold: ClassVar[float] = 0.15

    def applies_to(self, info: TierInfo) -> bool:
        return info.repeated

    def init(self, info: TierInfo) -> tuple[metrics.FeveStats, np.ndarray, int]:
        cells = max(info.n_stimuli, 1) * max(info.n_frames, 1)
        return metrics.init_feve_stats(cells, info.n_neurons), info.stimulus_slot, max(info.n_frames, 1)

    def update(self, state, batch, predictions, mask):
        stats, slot_of, n_frames = state
        b, t, n = predictions.shape
        stimulus = slot_of[np.asarray(batch["stimulus"])].astype(np.int64)
        cell = (stimulus[:, None] * n_frames + np.arange(t)[None, :]).reshape(-1).astype(np.int32)
        stats = metrics.update_feve_stats(
            stats, np.reshape(batch["responses"], (b * t, n)), np.reshape(predictions, (b * t, n)),
            cell, np.reshape(mask, (b * t,)),
        )
        return stats, slot_of, n_frames

    def per_neuron(self, state) -> dict[str, np.ndarray]:
        result = metrics.feve_from_stats(state[0])
        return {"feve": np.asarray(result.feve), "fev": np.asarray(result.fev)}

    def summarize(self, per_neuron: Mapping[str, np.ndarray]) -> Pooled:
        kept = per_neuron["fev"] >= self.threshold
        feve = float(per_neuron["feve"][kept].mean()) if kept.any() else float("nan")
        return {"feve": feve, "fev": float(per_neuron["fev"].mean()), "feve_neurons": int(kept.sum())}


@register_evaluator("ood_single_trial")
class SingleTrialCorrelationByStimulusType(Evaluator):
    """Bonus tiers: single-trial correlation per out-of-distribution stimulus type.

    The SENSORIUM 2023 bonus score is the mean over the OOD types of each type's
    single-trial correlation (each pooled over all neurons), so no type weighs more for
    having more trials.
    """

    primary = "single_trial_correlation_type_mean"
    prefix: ClassVar[str] = "single_trial_correlation/"

    def applies_to(self, info: TierInfo) -> bool:
        return info.bonus

    def init(self, info: TierInfo) -> tuple[dict[str, metrics.CorrelationStats], np.ndarray]:
        types = sorted(set(np.asarray(info.stimulus_types)[info.trials].tolist()))
        return {t: metrics.init_correlation_stats(info.n_neurons) for t in types}, info.stimulus_types

    def update(self, state, batch, predictions, mask):
        stats, types_of = state
        batch_types = np.asarray(types_of)[np.asarray(batch["trial"])]
        updated = dict(stats)
        for kind in np.unique(batch_types):
            mine = mask & (batch_types == kind)[:, None]
            updated[str(kind)] = metrics.update_correlation_stats(updated[str(kind)], batch["responses"],
                                                                  predictions, mine)
        return updated, types_of

    def per_neuron(self, state) -> dict[str, np.ndarray]:
        return {self.prefix + kind: np.asarray(metrics.correlation_from_stats(s)) for kind, s in state[0].items()}

    def summarize(self, per_neuron: Mapping[str, np.ndarray]) -> Pooled:
        by_type = {key[len(self.prefix):]: float(values.mean()) for key, values in per_neuron.items()}
        mean = float(np.mean(list(by_type.values()))) if by_type else float("nan")
        return {"single_trial_correlation_by_type": by_type, self.primary: mean}
