"""evaluate.py reports and submission files; load() + predict() reproduce the trainer."""

from __future__ import annotations

import io
import json
import os
import runpy
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import pyarrow.parquet as pq

from flax import nnx

import sensorium_jax
from sensorium_jax.models import build_model
from sensorium_jax.data.kinds import BURN_IN_FRAMES
from sensorium_jax.data.datasets import open_training_store
from sensorium_jax.data.store import open_store
from sensorium_jax.evaluation.submission import SUBMISSION_TIERS
from sensorium_jax.training import checkpointing
from sensorium_jax.training.mesh import make_data_mesh
from sensorium_jax.training.schedules import learning_rate_schedule, make_optimizer
from sensorium_jax.training.state import create_train_state
from sensorium_jax.training.steps import make_predict_step
from sensorium_jax.training.validation import predict_tier

REPO = Path(__file__).resolve().parents[1]


def test_evaluate_writes_report_plots_and_submission(trained_smoke_workdir, tiny_store, tmp_path):
    out = tmp_path / "evaluation"
    result = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "--workdir", str(trained_smoke_workdir), "--store",
         str(tiny_store), "--out", str(out), "--submission"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    store = open_store(tiny_store)
    assert set(report["mice"]) == set(store.mice)
    oracle = report["pooled"]["oracle"]
    assert oracle["neurons"] == sum(store.meta(m).n_neurons for m in store.mice)
    # The evaluated checkpoint is the best one: evaluate.py's score of the validation tier equals
    # the trainer's own score of it (a different path: sharded predict step, no first-frame
    # padding; the smoke burn-in is past the frames the core loses), and the ceiling is the
    # neuron-weighted mean of the synthetic ground truth's.
    summary = json.loads((trained_smoke_workdir / "summary.json").read_text())
    assert oracle["single_trial_correlation"] == pytest.approx(summary["best_validation_correlation"], abs=2e-4)
    truth = json.loads((Path(tiny_store) / "synthetic_oracle.json").read_text())
    ceiling = sum(truth[m]["oracle"]["single_trial_correlation"] * store.meta(m).n_neurons for m in store.mice) / \
        sum(store.meta(m).n_neurons for m in store.mice)
    assert oracle["oracle_ceiling"]["single_trial_correlation"] == pytest.approx(ceiling, rel=1e-6)
    assert oracle["fraction_of_ceiling"]["single_trial_correlation"] == pytest.approx(
        summary["best_validation_correlation"] / ceiling, abs=1e-3)
    for name in ("report.md", "correlations.png", "traces.png", "positions.png"):
        assert (out / name).stat().st_size > 0, name

    check_submission(out / "submission", store, report)
    assert "Complete: every submission tier holds every mouse of the model." in result.stdout
    assert "warning:" not in result.stdout


def check_submission(folder: Path, store, report: dict) -> None:
    """The four competition files, zipped per track, read back: columns, one row per test trial,
    the store's unit ids, predictions of neurons x (frames - 50) whatever the config's burn-in."""
    assert report["burn_in"] != BURN_IN_FRAMES  # the smoke config validates with its own burn-in
    for track, names in (("main", ("predictions_live_main.parquet.brotli", "predictions_final_main.parquet.brotli")),
                         ("bonus", ("predictions_live_test_bonus_ood.parquet.brotli", "predictions_final_test_bonus_ood.parquet.brotli"))):
        assert sorted(zipfile.ZipFile(folder / f"submission_{track}.zip").namelist()) == sorted(names), track
    for tier, (name, _) in SUBMISSION_TIERS.items():
        with zipfile.ZipFile(folder / f"submission_{SUBMISSION_TIERS[tier][1]}.zip") as archive:
            table = pq.read_table(io.BytesIO(archive.read(name)))
        assert table.column_names == ["mouse", "trial_indices", "prediction", "neuron_ids"], name
        rows = table.to_pylist()
        assert len(rows) == sum(len(store.meta(m).trials_of(tier)) for m in store.mice), name
        assert report["submission_contents"][tier] == {m: len(store.meta(m).trials_of(tier)) for m in store.mice}
        for row in rows:
            meta = store.meta(row["mouse"])
            trial = int(np.flatnonzero(meta.trial_ids == row["trial_indices"])[0])
            assert meta.tiers[trial] == tier
            prediction = np.asarray(row["prediction"])
            assert prediction.shape == (meta.n_neurons, int(meta.lengths[trial]) - BURN_IN_FRAMES), name
            assert row["neuron_ids"] == meta.unit_ids.tolist()
            assert np.all(prediction > 0)
    assert report["submission_missing"] == {}


def test_a_partial_submission_says_what_it_holds(trained_smoke_workdir, tiny_store, tmp_path, capsys):
    evaluate = runpy.run_path(str(REPO / "evaluate.py"))["evaluate"]
    report = evaluate(trained_smoke_workdir, store=tiny_store, out=tmp_path, tiers=["live_test_main"], submission=True)
    store = open_store(tiny_store)
    assert report["trained_on"] == []
    assert list(report["submission_contents"]) == ["live_test_main"]
    assert report["submission_missing"] == {tier: list(store.mice) for tier in SUBMISSION_TIERS
                                            if tier != "live_test_main"}
    text = (tmp_path / "report.md").read_text()
    assert "**WARNING: incomplete submission**" in text and "final_test_bonus lacks" in text
    assert "`predictions_final_main.parquet.brotli` (final_test_main): not written" in text
    stdout = capsys.readouterr().out
    assert f"warning: incomplete submission: final_test_main lacks {', '.join(store.mice)}" in stdout
    assert zipfile.ZipFile(tmp_path / "submission" / "submission_main.zip").namelist() == [
        "predictions_live_main.parquet.brotli"]
    assert not (tmp_path / "submission" / "submission_bonus.zip").exists()


def test_load_predict_matches_the_trainers_predictions(trained_smoke_workdir, tiny_store):
    model = sensorium_jax.load(trained_smoke_workdir)
    store = open_training_store(model.config.data)  # normalized as the run was
    assert model.mice == store.mice
    mouse = store.mice[1]
    np.testing.assert_array_equal(model.neuron_ids(mouse), store.meta(mouse).unit_ids)

    # The trainer's own predictions, from the same best checkpoint.
    mesh = make_data_mesh()
    schedule = learning_rate_schedule(model.config.schedule, int(model.config.train.steps))
    graphdef, state_like = create_train_state(
        build_model(model.config.model, model.card, nnx.Rngs(0)), make_optimizer(model.config.optimizer, schedule)
    )
    checkpoints = checkpointing.Checkpoints(trained_smoke_workdir)
    state, _ = checkpoints.restore(checkpointing.BEST, state_like)
    checkpoints.close()
    predict = make_predict_step(graphdef, mesh)
    batch, trainer = next(predict_tier(lambda b: predict(state.params, state.rest, b), store, mouse, "oracle", 4, mesh))

    # load() takes raw recordings: undo the pipeline's normalization of that batch.
    length = int(batch["frame_mask"][0].sum())
    norm = store.normalization(mouse).window(0, length)  # the run's own (per-frame) constants
    video = batch["video"][0, :length, ..., 0] * norm.video_std + norm.video_mean
    behavior = batch["behavior"][0, :length] * norm.behavior_scale
    pupil = batch["pupil_center"][0, :length] * norm.pupil_std + norm.pupil_mean
    predicted = model.predict(video, behavior, pupil, mouse=mouse)
    assert predicted.shape == (length, store.meta(mouse).n_neurons)
    lost = model.frames_lost
    np.testing.assert_allclose(predicted[lost:], trainer[0, lost:length], rtol=2e-4, atol=2e-5)
    raw = model.predict(video, behavior, pupil, mouse=mouse, raw_units=True)
    np.testing.assert_allclose(raw, predicted * norm.response_scale, rtol=1e-5)
    batched = model.predict(video[None], behavior[None], pupil[None], mouse=mouse)
    np.testing.assert_allclose(batched[0], predicted, rtol=1e-5, atol=1e-6)


def test_evaluate_takes_paths_relative_to_the_current_folder(trained_smoke_workdir, tiny_store, tmp_path,
                                                             monkeypatch):
    evaluate = runpy.run_path(str(REPO / "evaluate.py"))["evaluate"]
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    report = evaluate(os.path.relpath(trained_smoke_workdir), store=os.path.relpath(tiny_store),
                      out="evaluation", tiers=["oracle"])
    assert (tmp_path / "here" / "evaluation" / "report.json").is_file()
    assert set(report["pooled"]) == {"oracle"}
    assert report["store"] == str(Path(tiny_store).resolve())


def test_evaluate_reports_a_missing_checkpoint_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "--workdir", str(tmp_path / "nothing")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "checkpoint" in result.stderr
