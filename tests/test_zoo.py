"""The model zoo end to end: each smoke config trains (and learns), evaluates through
evaluate.py, and loads for inference with the trainer's own predictions."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

import sensorium_jax
from sensorium_jax.data.store import open_store
from sensorium_jax.training import checkpointing
from sensorium_jax.training.logging_utils import read_metrics
from sensorium_jax.training.loop import build_training, train_and_evaluate
from sensorium_jax.training.mesh import make_data_mesh
from sensorium_jax.training.steps import make_predict_step
from sensorium_jax.training.validation import predict_tier

REPO = Path(__file__).resolve().parents[1]

# (config, steps, required rise of the validation correlation over the untrained model).
# Measured on the tiny preset (2 CPU cores): the GRU smoke reaches 0.15-0.18 at step 100 from
# 0.00-0.03; DwiseNeuro, whose readout has no per-neuron position, 0.05-0.06 from 0.00; the
# two-member ensemble follows the smoke model (0.15+ at step 100).
ZOO = [
    ("gru_smoke", 100, 0.08),
    ("dwiseneuro_smoke", 100, 0.025),
    ("ensemble_smoke", 100, 0.08),
]


@pytest.fixture(scope="module", params=ZOO, ids=[name for name, _, _ in ZOO])
def trained(request, tiny_store, tmp_path_factory):
    name, steps, rise = request.param
    config = runpy.run_path(str(REPO / "configs" / f"{name}.py"))["get_config"]()
    config.data.store = str(tiny_store)
    config.train.steps = steps
    config.train.eval_every = steps // 2
    workdir = tmp_path_factory.mktemp(name)
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
    evaluate_main = runpy.run_path(str(REPO / "evaluate.py"))["main"]

    out = tmp_path / "evaluation"
    report = evaluate_main(["--workdir", str(workdir), "--out", str(out), "--tiers", "oracle"])
    oracle = report["pooled"]["oracle"]
    assert np.isfinite(oracle["single_trial_correlation"]) and np.isfinite(oracle["correlation_to_average"])
    # evaluate.py scores the best checkpoint the trainer kept by this very score
    assert oracle["single_trial_correlation"] == pytest.approx(summary.best_validation_correlation, abs=2e-3)
    assert json.loads((out / "report.json").read_text())["pooled"]["oracle"]["neurons"] > 0

    model = sensorium_jax.load(workdir)
    store = open_store(tiny_store)
    mouse = store.mice[0]
    mesh = make_data_mesh()
    setup = build_training(config, store, mesh)
    checkpoints = checkpointing.Checkpoints(workdir)
    state, _ = checkpoints.restore(checkpointing.BEST, setup.state)
    checkpoints.close()
    predict = make_predict_step(setup.graphdef, mesh)
    batch, trainer = next(predict_tier(
        lambda b: predict(state.inference_params, state.rest, b), store, mouse, "oracle", 4, mesh,
        frames_lost=setup.frames_lost, clip_length=setup.clip_length,
    ))
    norm = store.meta(mouse).normalization
    length = int(batch["frame_mask"][0].sum())
    video = batch["video"][0, :length, ..., 0] * norm.video_std + norm.video_mean
    behavior = batch["behavior"][0, :length] * norm.behavior_scale
    pupil = batch["pupil_center"][0, :length] * norm.pupil_std + norm.pupil_mean
    predicted = model.predict(video, behavior, pupil, mouse=mouse)
    assert predicted.shape == (length, store.meta(mouse).n_neurons) and np.all(predicted > 0)
    lost = setup.frames_lost
    np.testing.assert_allclose(predicted[lost:], trainer[0, lost:length], rtol=2e-4, atol=2e-5)


def test_separately_trained_workdirs_still_ensemble(trained, trained_smoke_workdir, tiny_store, tmp_path):
    """`--ensemble` averages separately trained models, whatever their architectures."""
    from sensorium_jax.inference import EnsemblePredictor

    name, _, workdir, _, _ = trained
    members = [sensorium_jax.load(trained_smoke_workdir), sensorium_jax.load(workdir)]
    both = EnsemblePredictor(members)
    store = open_store(tiny_store)
    mouse = store.mice[1]
    rng = np.random.default_rng(0)
    frames = 40
    video = rng.uniform(0, 255, (frames, *store.card().frame_shape)).astype(np.float32)
    behavior = rng.uniform(0, 2, (frames, 2)).astype(np.float32)
    pupil = rng.normal(0, 1, (frames, 2)).astype(np.float32)
    mean = both.predict(video, behavior, pupil, mouse=mouse)
    each = [m.predict(video, behavior, pupil, mouse=mouse) for m in members]
    np.testing.assert_allclose(mean, (each[0] + each[1]) / 2, rtol=1e-6)
    assert not np.allclose(each[0], each[1]), "two different models must predict differently"
    if name == "ensemble_smoke":
        evaluate_main = runpy.run_path(str(REPO / "evaluate.py"))["main"]
        report = evaluate_main(["--workdir", str(trained_smoke_workdir), "--ensemble", str(workdir),
                                "--out", str(tmp_path / "both"), "--tiers", "oracle"])
        assert np.isfinite(report["pooled"]["oracle"]["single_trial_correlation"])
