"""The fold ensemble: each fold's run and its distilled run on that fold's data, the ensemble of
all of them scored, and a second invocation that trains nothing again."""

from __future__ import annotations

import json

import pytest

from sensorium_jax.fold_ensemble import DISTILLED, FIRST_STAGE, SUMMARY_FILE, fold_runs, run_fold_ensemble, train_folds


@pytest.fixture
def configs(tiny_store):
    from toy_config import get_config

    first = get_config()
    first.data.store = str(tiny_store)
    first.data.n_folds = 2
    second = get_config()
    second.seed = 1
    second.data.clip_length = 12  # replaced by the first stage's data: both see the same folds
    return first, second


def test_runs_pair_each_fold_with_its_distilled_run_on_the_same_data(configs, tmp_path):
    first, second = configs
    runs = fold_runs(first, tmp_path, second)
    assert [(r.stage, r.fold, r.workdir.name) for r in runs] == [
        (FIRST_STAGE, 0, "fold_0"), (DISTILLED, 0, "distilled_fold_0"),
        (FIRST_STAGE, 1, "fold_1"), (DISTILLED, 1, "distilled_fold_1")]
    for teacher, student in (runs[0:2], runs[2:4]):
        assert teacher.config.data.fold == teacher.fold
        assert student.config.data.to_dict() == teacher.config.data.to_dict()
        assert student.config.train.distill.teacher == str(teacher.workdir)
        assert student.config.seed == 1 and teacher.config.train.distill.teacher == ""
    assert first.data.fold == -1  # the given configs are not changed
    assert [r.fold for r in fold_runs(first, tmp_path, folds=[1])] == [1]


def test_the_ensemble_of_every_fold_is_scored_and_finished_runs_are_not_trained_again(configs, tmp_path):
    first, second = configs
    report = run_fold_ensemble(first, tmp_path, second, tiers=["oracle"])

    runs = fold_runs(first, tmp_path, second)
    for run in runs:
        saved = json.loads((run.workdir / "config.json").read_text())
        assert saved["data"]["fold"] == run.fold
        assert saved["train"]["distill"]["teacher"] == run.config.train.distill.teacher
    members = report["checkpoint"].split(",")
    assert [m.split("/checkpoints/")[0] for m in members] == [str(r.workdir) for r in runs]
    assert report["pooled"] and report["trained_on"] == ["oracle"]  # the folds' runs train on train + oracle
    assert "| oracle (trained on) |" in (tmp_path / "evaluation" / "report.md").read_text()
    rows = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert [(r["stage"], r["fold"]) for r in rows] == [(r.stage, r.fold) for r in runs]

    logged = {run.workdir: (run.workdir / "metrics.jsonl").read_text() for run in runs}
    assert train_folds(runs, tmp_path) == rows
    assert {run.workdir: (run.workdir / "metrics.jsonl").read_text() for run in runs} == logged


def test_a_fold_out_of_range_is_refused_before_anything_trains(configs, tmp_path):
    from sensorium_jax.config_checks import ConfigError

    first, second = configs
    with pytest.raises(ConfigError, match="data.fold"):
        run_fold_ensemble(first, tmp_path / "runs", second, folds=[0, 2])
    assert not (tmp_path / "runs").exists()
