"""The model zoo end to end: each smoke config trains (and learns), evaluates through
evaluate.py, and loads for inference with the trainer's own predictions."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import sensorium_jax
from sensorium_jax.config import load_config
from sensorium_jax.data.store import open_store
from sensorium_jax.errors import InputDataError
from sensorium_jax.models import build_model
from sensorium_jax.training.logging_utils import read_metrics
from sensorium_jax.training.loop import train_and_evaluate
from sensorium_jax.training.state import uses_ema
from trained_runs import trainer_oracle_batch

REPO = Path(__file__).resolve().parents[1]

# (config file:variant, steps, required rise of the validation correlation over the untrained model).
# Measured on the tiny preset (2 CPU cores): the GRU smoke reaches 0.15-0.18 at step 100 from
# 0.00-0.03; DwiseNeuro, whose readout has no per-neuron position, 0.05-0.06 from 0.00; the
# two-member ensemble follows the smoke model (0.15+ at step 100).
ZOO = [
    ("gru_baseline.py:smoke", 100, 0.08),
    ("dwiseneuro.py:smoke", 100, 0.025),
    ("ensemble_baseline.py:smoke", 100, 0.08),
]


@pytest.fixture(scope="module", params=ZOO, ids=[name for name, _, _ in ZOO])
def trained(request, tiny_store, tmp_path_factory):
    name, steps, rise = request.param
    file, variant = name.split(":")
    config = load_config(REPO / "configs" / file, variant)
    config.data.store = str(tiny_store)
    config.train.steps = steps
    config.train.eval_every = steps // 2
    workdir = tmp_path_factory.mktemp(file.removesuffix(".py"))
    summary = train_and_evaluate(config, workdir)
    return name, config, workdir, summary, rise


def test_smoke_config_learns(trained):
    name, config, workdir, summary, rise = trained
    validations = read_metrics(workdir, "validation")
    untrained = validations[0]["validation_correlation"]
    assert abs(untrained) < 0.1, name
    assert summary.best_validation_correlation > untrained + rise, (name, validations)


def test_evaluate_and_load_agree_with_the_trainer(trained, tiny_store, tmp_path):
    name, config, workdir, summary, _ = trained
    evaluate = runpy.run_path(str(REPO / "evaluate.py"))["evaluate"]

    out = tmp_path / "evaluation"
    report = evaluate(workdir, out=out, tiers=["oracle"])
    oracle = report["pooled"]["oracle"]
    assert np.isfinite(oracle["single_trial_correlation"]) and np.isfinite(oracle["correlation_to_average"])
    # evaluate.py scores the best checkpoint the trainer kept by this very score
    assert oracle["single_trial_correlation"] == pytest.approx(summary.best_validation_correlation, abs=2e-3)
    assert json.loads((out / "report.json").read_text())["pooled"]["oracle"]["neurons"] > 0

    model, store, mouse, batch, trainer = trainer_oracle_batch(config, workdir)
    length = int(batch["frame_mask"][0].sum())
    norm = store.normalization(mouse).window(0, length)  # the run's own constants
    video, behavior, pupil = batch["video"][0, :length, ..., 0], batch["behavior"][0, :length], \
        batch["pupil_center"][0, :length]
    if norm.applied:  # load() takes raw recordings: undo the pipeline's normalization
        video = video * norm.video_std + norm.video_mean
        behavior = behavior * norm.behavior_scale
        pupil = pupil * norm.pupil_std + norm.pupil_mean
    n = store.meta(mouse).n_neurons
    predicted = model.predict(video, behavior, pupil, mouse=mouse, raw_units=True)
    assert predicted.shape == (length, n) and np.all(predicted > 0)
    trainer = trainer[0, :length, :n] * (norm.response_scale if norm.applied else 1.0)
    lost = model.frames_lost
    np.testing.assert_allclose(predicted[lost:], trainer[lost:], rtol=2e-4, atol=2e-5)


def test_separately_trained_workdirs_still_ensemble(trained, trained_smoke_workdir, tiny_store, tmp_path):
    """`--ensemble` averages separately trained models, whatever their architectures."""
    from sensorium_jax.inference import EnsemblePredictor

    name, _, workdir, _, _ = trained
    members = [sensorium_jax.load(trained_smoke_workdir), sensorium_jax.load(workdir)]
    if members[1].card.mice[0].normalization != members[0].card.mice[0].normalization:
        # one input and output unit for all members, or a one-line refusal
        with pytest.raises(InputDataError, match="normalization"):
            EnsemblePredictor(members)
        return
    both = EnsemblePredictor(members)
    store = open_store(tiny_store)
    mouse = store.mice[1]
    rng = np.random.default_rng(0)
    frames = 40
    video = rng.uniform(0, 255, (frames, *store.card().frame_shape)).astype(np.float32)
    behavior = rng.uniform(0, 2, (frames, 2)).astype(np.float32)
    pupil = rng.normal(0, 1, (frames, 2)).astype(np.float32)
    clip = next((m.clip_length for m in members if m.clip_length), frames)  # what every member takes
    inputs = both.normalize_inputs(video[:clip], behavior[:clip], pupil[:clip], mouse)
    applied = [np.asarray(m.apply(m.variables, inputs)) for m in members]
    common = min(a.shape[1] for a in applied)
    n = len(both.neuron_ids(mouse))
    assert not np.allclose(applied[0][0, -common:, :n], applied[1][0, -common:, :n]), "two models, two predictions"
    # the trial path (`predict`: raw inputs, windows, NaN-free frames) against the members' own
    # pure `apply` on the clip: the frames every member predicts are the members' mean
    predicted = both.predict(video[:clip], behavior[:clip], pupil[:clip], mouse=mouse)
    assert predicted.shape == (clip, n)
    np.testing.assert_allclose(predicted[clip - common:],
                               (applied[0][0, -common:, :n] + applied[1][0, -common:, :n]) / 2, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(both.apply(both.variables, inputs)),
                               (applied[0][:, -common:] + applied[1][:, -common:]) / 2, rtol=1e-5, atol=1e-7)
    positions = [m.readout_positions() for m in members]
    if all(p.pixels is not None for p in positions):
        np.testing.assert_allclose(both.readout_positions().pixels, (positions[0].pixels + positions[1].pixels) / 2)
    else:
        assert both.readout_positions() == next(p for p in positions if p.pixels is None)
    if name == "ensemble_baseline.py:smoke":
        _check_members_built_alone(workdir, inputs)
        evaluate = runpy.run_path(str(REPO / "evaluate.py"))["evaluate"]
        report = evaluate(trained_smoke_workdir, ensemble=[workdir], out=tmp_path / "both", tiers=["oracle"])
        assert np.isfinite(report["pooled"]["oracle"]["single_trial_correlation"])


def _check_members_built_alone(workdir: Path, inputs) -> None:
    """The stacked ensemble predicts the mean of single models of the member config, each
    loaded with its member's slice of the stacked parameters and statistics (no vmap, no
    member loop, no `mean_members`), and its members differ."""
    from sensorium_jax.inference.predictor import INPUT_KEYS

    ensemble = sensorium_jax.load(workdir)
    member_config = ensemble.config.model.member.copy_and_resolve_references()
    graphdef, _, _ = nnx.split(build_model(member_config, ensemble.card, nnx.Rngs(0)), nnx.Param, ...)
    params, rest = ensemble.variables["params"]["members"], ensemble.variables["rest"]["members"]
    alone = []
    for e in range(int(ensemble.config.model.members)):
        member = nnx.merge(graphdef, jax.tree.map(lambda x, e=e: x[e], params), jax.tree.map(lambda x, e=e: x[e], rest))
        alone.append(np.asarray(member({key: inputs[key] for key in INPUT_KEYS}, train=False)))
    assert len(alone) == 2 and np.abs(alone[0] - alone[1]).max() > 1e-3, "members trained from two streams differ"
    np.testing.assert_allclose(np.asarray(ensemble.apply(ensemble.variables, inputs)), np.mean(alone, axis=0),
                               rtol=1e-4, atol=1e-6)


def _memory(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_load_restores_only_what_prediction_needs(trained, monkeypatch):
    """No optimizer is built and Adam's moments are never read (for the 14-member ensemble or
    DwiseNeuro they are twice the parameters): only the inference parameters (the EMA when the
    run kept one) and the non-parameter state come back from the checkpoint."""
    name, config, workdir, _, _ = trained
    restored_states = []
    real_restore = ocp.Checkpointer.restore

    def spy(self, directory, *args, **kwargs):
        tree = real_restore(self, directory, *args, **kwargs)
        if Path(directory).name == "state":
            restored_states.append(tree)
        return tree

    monkeypatch.setattr(ocp.Checkpointer, "restore", spy)
    model = sensorium_jax.load(workdir)

    assert len(restored_states) == 1, name
    tree = restored_states[0]
    assert isinstance(tree, dict) and set(tree) == {"ema_params" if uses_ema(config) else "params", "rest"}, name
    abstract = nnx.eval_shape(lambda: build_model(config.model, model.card, nnx.Rngs(0)))
    _, params, rest = nnx.split(abstract, nnx.Param, ...)
    assert _memory(tree) == _memory(params) + _memory(rest), name
    assert _memory(model.variables) == _memory(params) + _memory(rest), name


def test_apply_is_a_pure_differentiable_function_of_the_inputs(trained, tiny_store):
    """`apply(variables, normalize_inputs(raw))` is what `predict` computes, and `jax.grad` of a
    neuron's response with respect to the raw video matches a finite difference."""
    name, _, workdir, _, _ = trained
    model = sensorium_jax.load(workdir)
    mouse = model.mice[0]
    frames = model.clip_length or model.frames_lost + 8
    rng = np.random.default_rng(1)
    video = rng.uniform(0, 255, (frames, *model.card.frame_shape)).astype(np.float32)
    behavior = rng.uniform(0, 2, (frames, model.card.behavior_dim)).astype(np.float32)
    pupil = rng.normal(0, 1, (frames, 2)).astype(np.float32)

    out = jax.jit(model.apply)(model.variables, model.normalize_inputs(video, behavior, pupil, mouse))
    n = len(model.neuron_ids(mouse))
    # `apply` speaks the units the model was trained in: raw for a model trained without normalization
    trained_raw = model.card.mice[0].normalization == "none"
    predicted = model.predict(video, behavior, pupil, mouse=mouse, raw_units=trained_raw)
    np.testing.assert_allclose(np.asarray(out[0, :, :n]), predicted[frames - out.shape[1]:], rtol=1e-4, atol=1e-6)

    @jax.jit
    def response(v: jax.Array) -> jax.Array:  # the last frame's response of neuron 3
        return model.apply(model.variables, model.normalize_inputs(v, behavior, pupil, mouse))[0, -1, 3]

    raw = jax.numpy.asarray(video)
    grad = np.asarray(jax.grad(response)(raw))
    assert grad.shape == video.shape and np.all(np.isfinite(grad)) and np.any(grad != 0), name
    pixel = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
    step = np.zeros_like(video)
    step[pixel] = 1.0  # one grey level
    difference = (float(response(raw + step)) - float(response(raw - step))) / 2.0
    assert difference == pytest.approx(float(grad[pixel]), rel=0.05), (name, pixel)
