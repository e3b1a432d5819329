"""The tier loop: whole trials of a tier predicted once and fed to every evaluator of the tier.

The trainer's validation and evaluate.py both score through `score_tier`; they differ only in
the predictor they pass (anything with `predict_normalized(batch) -> [B, T, Nmax]`, NaN on
frames the model cannot predict) and in the evaluators they ask for. A predictor with a
dataset card (`Predictor`, `EnsemblePredictor`) is matched to the store by mouse name and unit
id (`evaluation.matching`); one without (the trainer's, on its own store) reads batches as is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import jax
import numpy as np

from sensorium_jax.data.kinds import UNSCORED_TIERS, DatasetKind
from sensorium_jax.data.pipeline import make_eval_batches
from sensorium_jax.errors import InputDataError
from sensorium_jax.evaluation.evaluators import EvalResult, Evaluator, Pooled, TierInfo
from sensorium_jax.evaluation.matching import MouseMatch, as_model_batch, match_mouse, to_store_neurons
from sensorium_jax.models.windows import WINDOW_RULES, predict_frames

# (mouse, tier, trial indices in the store, predictions [B, T, N], frame mask [B, T])
TrialSink = Callable[[str, str, np.ndarray, np.ndarray, np.ndarray], None]

# Trials of a single-frame (static) tier kept for its example plot: enough for a scatter.
EXAMPLE_TRIALS = 256


class NormalizedPredictor(Protocol):
    def predict_normalized(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Pipeline-layout batch -> predictions [B, T, Nmax] in normalized response units."""


@dataclasses.dataclass
class TierScores:
    """Every evaluator's result for one mouse on one tier."""

    mouse: str
    tier: str
    trials: int
    neurons: int
    scored: bool  # False when the tier's responses are withheld (all zeros): results mean nothing
    results: dict[str, EvalResult]  # evaluator name -> result
    # For plots: recorded and predicted [rows, N], rows the frames of one trial ("frame") or,
    # on single-frame (static) tiers, the first trials' one frame each ("trial").
    example: dict | None = None

    def pooled(self) -> Pooled:
        """All evaluators' scalars of this mouse, in one flat namespace."""
        out: Pooled = {}
        for result in self.results.values():
            out.update(result.pooled)
        return out


class WindowedPredictor:
    """A trained predictor whose whole trials are combined by a chosen window rule
    (`evaluate.py --window_rule`), so that both rules of a fixed-length model can be scored
    from one checkpoint. The model, card and inputs are the predictor's own."""

    def __init__(self, predictor, rule: str):
        if rule not in WINDOW_RULES:
            raise ValueError(f"window rule must be one of {', '.join(WINDOW_RULES)}, got {rule!r}")
        self.predictor, self.rule = predictor, rule
        self.card, self.config, self.source = predictor.card, predictor.config, predictor.source
        self._forward = jax.jit(predictor.apply)

    def readout_positions(self):
        return self.predictor.readout_positions()

    def predict_normalized(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """As `Predictor.predict_normalized` (the start padded as the model allows), with windows
        combined by `rule`."""
        inputs = {key: batch[key] for key in ("video", "behavior", "pupil_center")}
        inputs["mouse"] = np.asarray(batch["mouse"], np.int32)
        variables = self.predictor.variables
        return predict_frames(lambda clip: self._forward(variables, clip), inputs,
                              frames_lost=self.predictor.frames_lost, clip_length=self.predictor.clip_length,
                              pad_start=self.predictor.pads_start, rule=self.rule)


def stimulus_types(meta) -> np.ndarray:
    """str [trials]: each trial's stimulus type ("unknown" where the source does not say)."""
    return np.asarray(meta.stimulus_types).astype(str)


def store_kind(store) -> DatasetKind:
    """The store's data set kind (a store holds one kind: video or static)."""
    return store.meta(store.mice[0]).dataset_kind


def default_burn_in(store) -> int:
    """Frames dropped per trial by default: the data kind's (SENSORIUM 2023 video: 50; static: 0)."""
    return store_kind(store).burn_in


def check_burn_in(burn_in: int, info: TierInfo, where) -> None:
    """Refuses a burn-in that leaves no frame of the tier to score (a static trial has one
    frame, so a video config's burn-in would silently score nothing)."""
    if info.n_frames and burn_in >= info.n_frames:
        raise InputDataError(where, "burn_in", f"fewer frames than the {info.tier} trials' {info.n_frames} "
                             f"({info.kind.name} data: {info.kind.burn_in})", burn_in)


def default_tiers(store) -> list[str]:
    """Every tier of the store that is scored, in the release's order (validation before the
    tests, whatever order the trials come in); tiers the kind does not name come last."""
    seen: list[str] = []
    for mouse in store.mice:
        for tier in store.meta(mouse).tiers:
            if str(tier) not in UNSCORED_TIERS and str(tier) not in seen:
                seen.append(str(tier))
    order = store_kind(store).tiers
    return sorted(seen, key=lambda tier: order.index(tier) if tier in order else len(order))


def tier_info(store, mouse: str, tier: str) -> TierInfo:
    meta = store.meta(mouse)
    trials = meta.trials_of(tier)
    dense = meta.stimulus_index
    stimuli = np.unique(dense[trials])
    slot = np.full(int(dense.max()) + 1 if dense.size else 1, -1, np.int32)
    slot[stimuli] = np.arange(len(stimuli), dtype=np.int32)
    return TierInfo(
        mouse=mouse, tier=tier, kind=meta.dataset_kind, n_neurons=meta.n_neurons,
        n_frames=int(meta.lengths[trials].max()) if len(trials) else 0, trials=trials,
        stimulus_slot=slot, n_stimuli=len(stimuli), stimulus_types=stimulus_types(meta),
    )


def scored_frame_mask(batch: Mapping[str, np.ndarray], predictions: np.ndarray, burn_in: int) -> np.ndarray:
    """Frames that count: valid, after the burn-in, and predicted by the model (not NaN)."""
    frames = batch["frame_mask"].shape[1]
    after_burn_in = np.arange(frames)[None, :] >= burn_in
    predicted = ~np.isnan(predictions[..., 0])
    return batch["frame_mask"].astype(bool) & after_burn_in & predicted


def score_tier(
    predictor: NormalizedPredictor,
    store,
    mouse: str,
    tier: str,
    evaluators: Mapping[str, Evaluator],
    *,
    burn_in: int | None = None,
    batch_size: int = 8,
    sink: TrialSink | None = None,
    match: MouseMatch | None = None,
) -> TierScores:
    """One pass over the tier's trials, every applicable evaluator fed from it.

    `match`: the model's readouts of this store mouse (default: matched by name and unit id
    when the predictor has a `card`; the store's own order when it has none).
    """
    burn_in = default_burn_in(store) if burn_in is None else int(burn_in)
    info = tier_info(store, mouse, tier)
    check_burn_in(burn_in, info, store.path)
    n = info.n_neurons
    if match is None and getattr(predictor, "card", None) is not None:
        match = match_mouse(predictor.card, store.mouse_name(mouse), store.meta(mouse).unit_ids, where=store.path)
    active = {name: e for name, e in evaluators.items() if e.applies_to(info)}
    states = {name: e.init(info) for name, e in active.items()}
    any_signal, example = False, None
    for batch in make_eval_batches(store, mouse, tier, batch_size):
        if match is None:
            raw = np.asarray(predictor.predict_normalized(batch))[..., :n]
        else:
            raw = to_store_neurons(np.asarray(predictor.predict_normalized(as_model_batch(batch, match))), match)
        mask = scored_frame_mask(batch, raw, burn_in)
        responses = np.nan_to_num(batch["responses"][..., :n])
        predictions = np.nan_to_num(raw)
        any_signal |= bool(np.any(responses[batch["frame_mask"].astype(bool)] != 0))
        scored_batch = dict(batch, responses=responses)
        for name, evaluator in active.items():
            states[name] = evaluator.update(states[name], scored_batch, predictions, mask)
        if sink is not None:
            sink(mouse, tier, batch["trial"], raw, batch["frame_mask"])
        example = grow_example(example, batch, responses, predictions, single_frame=info.n_frames == 1)
    results = {name: e.result(states[name]) for name, e in active.items()}
    return TierScores(mouse, tier, trials=len(info.trials), neurons=n, scored=any_signal and len(info.trials) > 0,
                      results=results, example=example)


def grow_example(example: dict | None, batch: Mapping[str, np.ndarray], responses: np.ndarray,
                 predictions: np.ndarray, *, single_frame: bool) -> dict | None:
    """Pure: the tier's example for plots after one more batch. A video tier's is its first
    trial's frames; a single-frame tier's the first `EXAMPLE_TRIALS` trials' one frame each,
    since one frame is no trace."""
    if not single_frame:
        if example is not None:
            return example
        length = int(batch["frame_mask"][0].sum())
        return {"axis": "frame", "trial": int(batch["trial"][0]), "recorded": responses[0, :length].copy(),
                "predicted": predictions[0, :length].copy()}
    example = example or {"axis": "trial", "trial": int(batch["trial"][0]),
                          "recorded": responses[:0, 0], "predicted": predictions[:0, 0]}
    room = EXAMPLE_TRIALS - len(example["recorded"])
    if room <= 0:
        return example
    return dict(example, recorded=np.concatenate([example["recorded"], responses[:room, 0]]),
                predicted=np.concatenate([example["predicted"], predictions[:room, 0]]))


def pool_tier(scores: Sequence[TierScores], evaluators: Mapping[str, Evaluator]) -> Pooled:
    """Each evaluator's scalars pooled over all neurons of all the given mice (one tier)."""
    out: Pooled = {}
    for name, evaluator in evaluators.items():
        results = [s.results[name] for s in scores if name in s.results]
        if results:
            out.update(evaluator.pool(results))
    return out


def evaluate(
    evaluator: Evaluator, predictor: NormalizedPredictor, store, mouse: str, tier: str, *,
    burn_in: int | None = None, batch_size: int = 8,
) -> EvalResult:
    """One evaluator on one mouse's tier (a tier pass of its own; `score_tier` shares one)."""
    if not evaluator.applies_to(tier_info(store, mouse, tier)):
        raise ValueError(f"evaluator {evaluator.name!r} is not defined on tier {tier!r}")
    return score_tier(predictor, store, mouse, tier, {evaluator.name: evaluator}, burn_in=burn_in,
                      batch_size=batch_size).results[evaluator.name]
