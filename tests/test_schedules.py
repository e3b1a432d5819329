"""The plateau schedule and early stopping: `plateau_update` on score sequences, and the
training loop stopping before `train.steps` when validation stops improving."""

from __future__ import annotations

import math

import pytest

from sensorium_jax.training import loop
from sensorium_jax.training.logging_utils import read_metrics
from sensorium_jax.training.schedules import PlateauState, plateau_update


def run(scores, factor=0.5, patience=2, max_reductions=2, threshold=1e-6):
    """Feeds scores (steps 10, 20, ...); returns the states after each and the index of the stop."""
    state, states = PlateauState(), []
    for i, score in enumerate(scores):
        state, stop = plateau_update(state, score, 10 * (i + 1), factor=factor, patience=patience,
                                     max_reductions=max_reductions, threshold=threshold)
        states.append(state)
        if stop:
            return states, i
    return states, None


def test_improving_scores_track_the_best_and_never_reduce():
    states, stop = run([0.1, 0.2, 0.25, 0.3, 0.31])
    assert stop is None
    assert [s.best for s in states] == [0.1, 0.2, 0.25, 0.3, 0.31]
    assert [s.best_step for s in states] == [10, 20, 30, 40, 50]
    assert all(s.scale == 1.0 and s.reductions == 0 and s.bad_evaluations == 0 for s in states)
    assert PlateauState().best == -math.inf  # any first score is an improvement
    first, _ = plateau_update(PlateauState(), -0.5, 7, factor=0.5, patience=0, max_reductions=0)
    assert first.best == -0.5 and first.best_step == 7


def test_patience_then_reduction_by_factor_then_stop_after_max_reductions():
    # best 0.3 at step 20; patience 2: the 3rd bad evaluation reduces (scale x0.5) and resets the
    # count; the 3rd bad one after the 2nd reduction stops.
    scores = [0.2, 0.3, 0.29, 0.3, 0.1, 0.25, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
    states, stop = run(scores, factor=0.5, patience=2, max_reductions=2)
    assert [s.bad_evaluations for s in states] == [0, 0, 1, 2, 0, 1, 2, 0, 1, 2, 3]
    assert [s.scale for s in states] == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert [s.reductions for s in states] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert stop == 10  # the 11th score; the 12th is never seen
    assert all(s.best == 0.3 and s.best_step == 20 for s in states[1:])


def test_improvement_resets_the_count_but_not_the_scale():
    scores = [0.3, 0.2, 0.2, 0.2, 0.35, 0.2, 0.2]
    states, stop = run(scores, factor=0.1, patience=2, max_reductions=1)
    assert stop is None
    assert states[3].scale == pytest.approx(0.1) and states[3].reductions == 1
    assert states[4].best == 0.35 and states[4].best_step == 50 and states[4].bad_evaluations == 0
    assert states[4].scale == pytest.approx(0.1)  # the rate is not raised again
    assert [s.bad_evaluations for s in states[4:]] == [0, 1, 2]


def test_threshold_equal_scores_are_not_improvements():
    states, stop = run([0.5, 0.5 + 5e-7, 0.5], patience=0, max_reductions=0)
    assert stop == 1 and states[-1].best == 0.5 and states[-1].best_step == 10
    states, stop = run([0.5, 0.5 + 2e-6], patience=0, max_reductions=0)
    assert stop is None and states[-1].best == 0.5 + 2e-6
    # zero patience, zero reductions: the first bad evaluation stops
    states, stop = run([0.5, 0.4], patience=0, max_reductions=0)
    assert stop == 1 and states[-1].scale == 1.0
    # a larger threshold: small gains count as bad evaluations
    states, stop = run([0.5, 0.52, 0.54], patience=1, max_reductions=0, threshold=0.05)
    assert stop == 2 and states[-1].best == 0.5


def test_training_stops_early_when_validation_cannot_improve(smoke_config, tmp_path, monkeypatch):
    """The loop lowers the step's learning-rate scale and stops before `train.steps`.

    The validation score is replaced by a falling sequence (no model makes this deterministic),
    the rest is the real loop: eval every 2 steps, patience 1, one reduction. Evaluations at
    steps 2 (best), 4 (bad 1), 6 (bad 2: rate x0.1), 8 (bad 1), 10 (bad 2, no reduction left:
    stop), so 10 of the 40 steps run.
    """
    smoke_config.train.steps = 40
    smoke_config.train.eval_every = 2
    smoke_config.train.log_every = 1
    smoke_config.schedule.name = "plateau"
    smoke_config.schedule.plateau_factor = 0.1
    smoke_config.schedule.plateau_patience = 1
    smoke_config.schedule.max_reductions = 1
    calls = []

    def falling(*args, **kwargs):
        calls.append(len(calls))
        return 0.5 - 0.01 * len(calls), {}

    monkeypatch.setattr(loop, "validation_score", falling)
    summary = loop.train_and_evaluate(smoke_config, tmp_path)
    assert summary.steps == 10 and len(calls) == 6  # the untrained evaluation, then steps 2..10
    assert summary.best_step == 2 and summary.best_validation_correlation == pytest.approx(0.48)
    validations = read_metrics(tmp_path, "validation")
    assert [v["step"] for v in validations] == [0, 2, 4, 6, 8, 10]
    assert [v["learning_rate_scale"] for v in validations[1:]] == pytest.approx([1, 1, 0.1, 0.1, 0.1])
    train = read_metrics(tmp_path, "train")
    assert [r["step"] for r in train] == list(range(1, 11))
    # the scale the loop logs for steps 7.. is the reduced one
    assert [r["learning_rate_scale"] for r in train] == pytest.approx([1] * 6 + [0.1] * 4)
