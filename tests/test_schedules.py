"""The plateau schedule and early stopping: the "simple" and "reference" rules on scripted score
sequences (the reference rule against torch's ReduceLROnPlateau inside the reference trainer's
early-stopping loop), and the training loop stopping, restoring the best checkpoint and resuming."""

from __future__ import annotations

import math

import jax
import ml_collections
import numpy as np
import pytest

from sensorium_jax.config import base_config
from sensorium_jax.training import loop
from sensorium_jax.training.logging_utils import read_metrics
from sensorium_jax.training.schedules import (
    PlateauState,
    plateau_update,
    reference_start,
    restores_best,
    schedule_update,
)


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


# --------------------------------------------------------------------------- the reference rule


def reference_config(**overrides) -> ml_collections.ConfigDict:
    schedule = base_config().schedule
    schedule.update(name="plateau", plateau_rule="reference", learning_rate=5e-3, plateau_factor=0.3,
                    plateau_patience=5, plateau_threshold=1e-6, min_learning_rate=1e-4, restore_best=True,
                    max_reductions=4)
    schedule.update(overrides)
    return schedule


def run_rule(schedule, scores, untrained):
    """Our rule on `scores` (epochs 1, 2, ...): per epoch the rate, and the (epoch, best epoch) of
    each restore; the epoch of the stop (None: never)."""
    state = reference_start(PlateauState(), untrained)
    rates, restores = [], []
    for epoch, score in enumerate(scores, start=1):
        before = state
        state, stop = schedule_update(schedule, state, score, epoch)
        rates.append(schedule.learning_rate * state.scale)
        if restores_best(schedule, before, state):
            restores.append((epoch, state.best_step))
        if stop:
            return rates, restores, epoch
    return rates, restores, None


def test_reference_rule_on_a_scripted_sequence():
    # patience 2, rate x0.5 with a floor of 0.3, stop at the 3rd plateau; untrained score 0.
    # epoch 3-4 bad: plateau 1 (back to epoch 2); the scheduler's own count reaches 3 at epoch 5
    # (rate 0.5). New best at 6; 7-8 bad: plateau 2 (back to 6); scheduler at 9: 0.25 -> floor
    # 0.3. 10: the stopper's 2nd bad evaluation since the restore, the 3rd plateau: stop.
    schedule = reference_config(learning_rate=1.0, plateau_factor=0.5, plateau_patience=2, min_learning_rate=0.3,
                                max_reductions=3)
    scores = [0.2, 0.3, 0.3, 0.1, 0.25, 0.4, 0.39, 0.39, 0.39, 0.39, 0.5]
    rates, restores, stop = run_rule(schedule, scores, untrained=0.0)
    assert rates == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.3, 0.3])
    assert restores == [(4, 2), (8, 6), (10, 6)]
    assert stop == 10


def test_reference_rule_without_restoring_still_counts_plateaus():
    schedule = reference_config(plateau_patience=1, max_reductions=2, restore_best=False)
    rates, restores, stop = run_rule(schedule, [0.1, 0.05, 0.06, 0.2], untrained=0.0)
    assert restores == [] and stop == 3  # plateaus at epochs 2 and 3
    assert rates == pytest.approx([5e-3, 5e-3, 1.5e-3])


def torch_reference(scores, untrained, *, lr, factor, patience, tolerance, min_lr, lr_decay_steps, max_iter):
    """The reference trainer's control flow (neuralpredictors `early_stopping` with interval 1,
    `restore_best`, around torch's own ReduceLROnPlateau) on scripted scores."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=factor, patience=patience, threshold=tolerance, threshold_mode="abs",
        min_lr=min_lr)
    epoch, best, best_epoch, rates, restores, feed = 0, untrained, 0, [], [], iter(scores)
    for _ in range(lr_decay_steps):
        patience_counter = 0
        while patience_counter < patience and epoch < max_iter:
            epoch += 1
            current = next(feed)
            scheduler.step(current)
            rates.append(optimizer.param_groups[0]["lr"])
            if current * -1 < best * -1 - tolerance:
                best, best_epoch, patience_counter = current, epoch, 0
            else:
                patience_counter += 1
        if epoch < max_iter and lr_decay_steps > 1:
            restores.append((epoch, best_epoch))
    return rates, restores, epoch


@pytest.mark.parametrize("seed,untrained", [(0, 0.0), (1, 0.0), (2, 0.35), (3, 0.0)])
def test_reference_rule_follows_torch_and_the_reference_early_stopper(seed, untrained):
    rng = np.random.default_rng(seed)
    # rising, then noisy plateaus; quantised so ties (equal scores) happen too
    scores = np.round(0.3 * (1 - np.exp(-np.arange(1, 201) / 8)) + rng.normal(0, 0.01, 200), 3).tolist()
    schedule = reference_config(min_learning_rate=2e-4)
    rates, restores, stop = run_rule(schedule, scores, untrained)
    expected_rates, expected_restores, expected_stop = torch_reference(
        scores, untrained, lr=5e-3, factor=0.3, patience=5, tolerance=1e-6, min_lr=2e-4, lr_decay_steps=4,
        max_iter=200)
    assert stop == expected_stop < 200
    assert restores == expected_restores and len(restores) == 4
    np.testing.assert_allclose(rates, expected_rates, rtol=1e-9)


def test_simple_rule_keeps_the_floor_and_counts_plateaus():
    schedule = base_config().schedule
    schedule.update(learning_rate=1.0, plateau_factor=0.1, plateau_patience=0, max_reductions=3,
                    min_learning_rate=0.02)
    state, scales = PlateauState(), []
    for step, score in enumerate([0.5, 0.4, 0.4, 0.4], start=1):
        state, stop = schedule_update(schedule, state, score, step)
        scales.append(state.scale)
    assert scales == pytest.approx([1, 0.1, 0.02, 0.02]) and state.plateaus == state.reductions == 3
    assert not stop and not restores_best(schedule, PlateauState(), state)  # restore_best is off by default
    # schedules without a plateau rule only follow the best score
    schedule.name = "constant"
    state, stop = schedule_update(schedule, PlateauState(), 0.5, 1)
    state, stop = schedule_update(schedule, state, 0.4, 2)
    assert (state.best, state.best_step, state.scale, state.plateaus, stop) == (0.5, 1, 1.0, 0, False)


def _saved(config, workdir, kind, step) -> tuple:
    """(TrainState, meta) of one saved checkpoint of a run of `config`."""
    from flax import nnx

    from sensorium_jax.data.store import open_store
    from sensorium_jax.models import build_model
    from sensorium_jax.training import checkpointing
    from sensorium_jax.training.schedules import learning_rate_schedule, make_optimizer
    from sensorium_jax.training.state import create_train_state

    model = build_model(config.model, open_store(config.data.store).card(), nnx.Rngs(0))
    _, like = create_train_state(model, make_optimizer(config.optimizer, learning_rate_schedule(config.schedule, 1)))
    return checkpointing.Checkpoints(workdir).restore(kind, like, step=step)


def batch_stats(rest) -> list[np.ndarray]:
    from flax import nnx

    variables = jax.tree.leaves(rest, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return [np.asarray(v[...]) for v in variables if isinstance(v, nnx.BatchStat)]


def scripted(scores):
    """A `validation_score` stand-in returning `scores` in turn (the loop's calls, in order)."""
    calls = []

    def score(*args, **kwargs):
        calls.append(len(calls))
        return scores[len(calls) - 1], {}

    return score, calls


def reference_smoke(config):
    config.train.steps = 40
    config.train.eval_every = 1
    config.train.log_every = 1
    config.schedule.update(plateau_rule="reference", plateau_patience=1, max_reductions=2, restore_best=True,
                           plateau_factor=0.1, min_learning_rate=0.0)
    return config


# evaluations at steps 0 (untrained), 1 (best), 2 (best), 3 (bad: plateau 1, back to step 2),
# 4 (bad: the scheduler's 2nd, rate x0.1; plateau 2: stop)
REFERENCE_SCORES = [0.0, 0.3, 0.5, 0.4, 0.45]


def test_loop_restores_the_best_checkpoint_at_each_plateau(smoke_config, tmp_path, monkeypatch):
    from sensorium_jax.training import checkpointing

    score, calls = scripted(REFERENCE_SCORES)
    monkeypatch.setattr(loop, "validation_score", score)
    summary = loop.train_and_evaluate(reference_smoke(smoke_config), tmp_path)
    assert summary.steps == 4 and len(calls) == 5 and summary.best_step == 2
    validations = read_metrics(tmp_path, "validation")
    assert [v["learning_rate_scale"] for v in validations[1:]] == pytest.approx([1, 1, 1, 0.1])
    config = reference_smoke(smoke_config)
    best, _ = _saved(config, tmp_path, checkpointing.BEST, 2)
    after_restore, _ = _saved(config, tmp_path, checkpointing.LATEST, 3)
    trained_on, _ = _saved(config, tmp_path, checkpointing.LATEST, 4)
    assert int(after_restore.step) == 3 and batch_stats(best.rest)
    for restored, saved in zip(jax.tree.leaves(after_restore.params), jax.tree.leaves(best.params), strict=True):
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(saved))
    for restored, saved in zip(batch_stats(after_restore.rest), batch_stats(best.rest), strict=True):
        np.testing.assert_array_equal(restored, saved)
    # the optimizer's moments go on (only parameters and statistics come back), and training continues
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(after_restore.opt_state), jax.tree.leaves(best.opt_state)))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(trained_on.params), jax.tree.leaves(best.params)))


def test_reference_rule_resumes_on_the_same_trajectory(smoke_config, tmp_path, monkeypatch):
    """Stopped after the restore at step 3 and resumed: the same scale, plateaus and parameters."""
    from sensorium_jax.training import checkpointing

    whole, _ = scripted(REFERENCE_SCORES)
    monkeypatch.setattr(loop, "validation_score", whole)
    loop.train_and_evaluate(reference_smoke(smoke_config.copy_and_resolve_references()), tmp_path / "whole")
    parts, calls = scripted(REFERENCE_SCORES)
    monkeypatch.setattr(loop, "validation_score", parts)
    first = reference_smoke(smoke_config.copy_and_resolve_references())
    first.train.steps = 3
    loop.train_and_evaluate(first, tmp_path / "parts")
    loop.train_and_evaluate(reference_smoke(smoke_config), tmp_path / "parts")
    assert len(calls) == 5  # the untrained model is not scored again on resume
    (a, meta_a), (b, meta_b) = (_saved(smoke_config, tmp_path / name, checkpointing.LATEST, 4)
                                for name in ("whole", "parts"))
    numbers = [(x, y) for x, y in zip(jax.tree.leaves((a.params, a.opt_state, a.lr_scale)),
                                      jax.tree.leaves((b.params, b.opt_state, b.lr_scale)), strict=True)]
    numbers += list(zip(batch_stats(a.rest), batch_stats(b.rest), strict=True))
    for x, y in numbers:
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    assert float(a.lr_scale) == pytest.approx(0.1)
    assert meta_a["plateau"] == meta_b["plateau"]
    assert (meta_a["plateau"]["plateaus"], meta_a["plateau"]["scale"]) == (2, pytest.approx(0.1))


def test_schedule_and_epoch_settings_are_checked_before_any_work():
    from sensorium_jax.config import load_config
    from sensorium_jax.config_checks import optimization_problems

    config = load_config("configs/factorized_baseline.py")
    assert optimization_problems(config) == []
    assert config.schedule.plateau_rule == "reference" and config.train.max_epochs == 200
    config.schedule.update(plateau_rule="bogus", min_learning_rate=-1.0, plateau_threshold=-1e-6)
    config.train.max_epochs = -1
    problems = "\n".join(optimization_problems(config))
    for key in ("schedule.plateau_rule = 'bogus'", "schedule.min_learning_rate = -1.0",
                "schedule.plateau_threshold = -1e-06", "train.max_epochs = -1"):
        assert key in problems
    config = load_config("configs/factorized_baseline.py")
    config.schedule.plateau_patience = 0
    assert optimization_problems(config) == [
        "schedule.plateau_patience = 0: expected at least 1 with schedule.plateau_rule='reference'"]


def test_schedule_and_optimizer_group_fields_are_config_data_and_checked():
    import json

    from sensorium_jax.config_checks import config_problems, resume_problems

    config = base_config()
    assert config.schedule.flat_fraction == 0.0 and config.schedule.warmup_start_factor == 0.0
    assert len(config.optimizer.groups) == 0
    config.schedule.name = "warmup_flat_cosine"
    config.schedule.flat_fraction = 1.5
    config.schedule.warmup_start_factor = -0.1
    problems = " ".join(config_problems(config))
    assert "schedule.flat_fraction = 1.5" in problems and "schedule.warmup_start_factor = -0.1" in problems

    saved = json.loads(base_config().to_json_best_effort())
    grouped = base_config()
    grouped.optimizer.groups = ml_collections.ConfigDict(
        {"readout": {"modules": ("readout",), "learning_rate_scale": 0.75, "weight_decay": 0.1}})
    assert any(p.startswith("optimizer.groups.readout") for p in
               resume_problems(saved, json.loads(grouped.to_json_best_effort())))


def test_loss_options_are_checked_against_the_loss():
    from sensorium_jax.config_checks import config_problems
    from sensorium_jax.models.losses import loss_option_names

    config = base_config()
    config.train.loss_options = ml_collections.ConfigDict({"weight": 2.0})
    assert any(p.startswith("train.loss_options.weight") and "an option of loss 'poisson'" in p
               for p in config_problems(config))
    config.train.loss = "poisson_correlation"
    assert "weight" in loss_option_names("poisson_correlation")
    assert not [p for p in config_problems(config) if "loss_options" in p]
