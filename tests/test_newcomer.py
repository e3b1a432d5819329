"""A newcomer's first session as the README tells it, from a fresh folder with relative paths
(train, evaluate with a submission, load and predict), and the exit statuses they may meet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sensorium_jax
from sensorium_jax.config import load_config
from sensorium_jax.errors import (
    INPUT_ERROR_EXIT,
    NON_FINITE_LOSS_EXIT,
    OUT_OF_MEMORY_EXIT,
    InputDataError,
    NonFiniteLossError,
    run_cli,
)

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def fresh_folder(tiny_store, tmp_path_factory) -> Path:
    """A folder outside the repository with the scripts, the configs and the data, nothing else."""
    folder = tmp_path_factory.mktemp("newcomer")
    for name in ("train.py", "evaluate.py", "configs"):
        (folder / name).symlink_to(REPO / name)
    (folder / "data").mkdir()
    (folder / "data" / "tiny").symlink_to(tiny_store)
    return folder


def test_the_readme_sequence_works_with_relative_paths(fresh_folder, monkeypatch):
    train = _run(["train.py", "--config", "configs/smoke.py", "--workdir", "runs/smoke", "--config.train.steps=20",
                  "--config.train.eval_every=10", "--config.data.store=data/tiny"], fresh_folder)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (fresh_folder / "runs" / "smoke" / "checkpoints" / "best").is_dir()

    evaluate = _run(["evaluate.py", "--workdir", "runs/smoke", "--submission"], fresh_folder)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert (fresh_folder / "runs" / "smoke" / "evaluation" / "report.json").is_file()
    assert (fresh_folder / "runs" / "smoke" / "evaluation" / "submission" / "submission_main.zip").is_file()

    monkeypatch.chdir(fresh_folder)
    model = sensorium_jax.load("runs/smoke")
    assert not Path(model.source).is_absolute()  # reports show the path as the user typed it
    frames = 40
    rng = np.random.default_rng(0)
    video = rng.uniform(0, 255, (frames, *model.card.frame_shape)).astype(np.float32)
    behavior = rng.uniform(0, 2, (frames, model.card.behavior_dim)).astype(np.float32)
    pupil = rng.normal(0, 1, (frames, 2)).astype(np.float32)
    responses = model.predict(video, behavior, pupil, mouse=model.mice[0])
    assert responses.shape == (frames, len(model.neuron_ids(model.mice[0]))) and np.all(responses > 0)


def test_a_diverging_run_exits_with_status_4(fresh_folder):
    run = _run(["train.py", "--config", "configs/smoke.py", "--workdir", "runs/diverging",
                "--config.schedule.learning_rate=1e6", "--config.train.steps=10", "--config.train.log_every=2",
                "--config.data.store=data/tiny"], fresh_folder)
    assert run.returncode == NON_FINITE_LOSS_EXIT == 4, run.stderr[-3000:]
    assert "error: loss became" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("error, status", [
    (InputDataError("store", "mice", "at least one"), INPUT_ERROR_EXIT),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes."), OUT_OF_MEMORY_EXIT),
    (NonFiniteLossError("loss became nan at or before step 2"), NON_FINITE_LOSS_EXIT),
], ids=["bad input", "out of memory", "non-finite loss"])
def test_each_failure_a_user_can_act_on_has_its_own_exit_status(error, status, capsys):
    def main() -> None:
        raise error

    with pytest.raises(SystemExit) as stopped:
        run_cli(main)
    assert stopped.value.code == status
    assert capsys.readouterr().err.startswith("error: ")


def test_exit_statuses_are_distinct_and_documented():
    statuses = {INPUT_ERROR_EXIT, OUT_OF_MEMORY_EXIT, NON_FINITE_LOSS_EXIT}
    assert statuses == {2, 3, 4}
    readme = (REPO / "README.md").read_text()
    for status in statuses:
        assert f"| {status} |" in readme


def test_config_variants_load_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # configs find their siblings from the repository, not the cwd
    assert load_config("configs/dwiseneuro.py", "smoke").model.clip_length == 16
    assert load_config("configs/dwiseneuro.py").model.clip_length == 32
    ensemble = load_config("configs/ensemble_baseline.py", "smoke")
    assert ensemble.model.members == 2 and ensemble.model.member == load_config("configs/smoke.py").model
    assert load_config("configs/gru_baseline.py", "smoke").data.synthetic_preset == "tiny"
    with pytest.raises(ValueError, match="smoke"):
        load_config("configs/gru_baseline.py", "tiny")
