"""Nothing silently wrong: bad configs, shared workdirs, incompatible resumes, kills and Ctrl-C.

Config checks are pure functions tested directly; what the user sees (exit statuses, one line
per problem, files left untouched) is tested through `python train.py`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sensorium_jax.config import load_config
from sensorium_jax.config_checks import (
    config_problems,
    global_batch_problems,
    resume_problems,
    unknown_key_problems,
)
from sensorium_jax.errors import INPUT_ERROR_EXIT, INTERRUPTED_EXIT, InputDataError

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.py"


def smoke():
    return load_config(SMOKE)


def train_command(workdir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "train.py", "--config", str(SMOKE), "--workdir", str(workdir), *overrides]


def run_train(workdir: Path, *overrides: str, env: dict | None = None, timeout: int = 300):
    return subprocess.run(train_command(workdir, *overrides), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def start_train(workdir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(train_command(workdir, *overrides), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def metrics(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written
    return records


def wait_for(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended early ({process.returncode}): {process.stderr.read()[-2000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the training")
        time.sleep(0.1)


# --------------------------------------------------------------------------- pure config checks


@pytest.mark.parametrize("key, value", [
    ("schedule.learning_rate", -1.0),
    ("schedule.name", "bogus"),
    ("optimizer.name", "bogus"),
    ("train.loss", "bogus"),
    ("train.eval_every", 0),
    ("train.log_every", -3),
    ("train.steps", 0),
    ("train.ema_decay", 1.0),
    ("train.validation_metric", "bogus"),
    ("data.validation_tier", "bogus"),
    ("data.validation_tier", "train"),
    ("data.train_tiers", ("bogus",)),
    ("data.clip_length", 0),
    ("data.eval_batch_size", 0),
    ("data.mouse_sampling", "bogus"),
    ("data.synthetic_preset", "bogus"),
    ("model.kernels", "bogus"),
    ("model.name", "no_such_model"),
])
def test_each_bad_value_is_one_problem_naming_key_and_value(key, value):
    config = smoke()
    section, _, field = key.rpartition(".")
    config[section][field] = value
    problems = config_problems(config)
    assert len(problems) == 1, problems
    assert problems[0].startswith(key) and repr(value)[:10] in problems[0]


def test_shipped_configs_have_no_problems():
    """Every variant of every config file (each file lists its `VARIANTS`)."""
    from sensorium_jax.config import import_config

    for path in sorted((REPO / "configs").glob("*.py")):
        for variant in import_config(path).VARIANTS:
            assert config_problems(load_config(path, variant or None)) == [], f"{path.name}:{variant}"


def test_allowed_values_are_listed():
    config = smoke()
    config.train.loss = "mse"
    config.train.validation_metric = "nope"
    text = "\n".join(config_problems(config))
    assert "'poisson'" in text and "'single_trial'" in text and "'feve'" in text


def test_global_batch_must_split_over_the_devices():
    config = smoke()  # tiny preset: 2 mice x 4 clips = 8
    assert global_batch_problems(config, 2, devices=8) == []
    [problem] = global_batch_problems(config, 2, devices=3)
    assert "data.clips_per_mouse" in problem and "8" in problem and "3 devices" in problem
    assert len(config_problems(config, devices=3)) == 1  # known before the data is generated


def test_resume_problems_name_only_incompatible_keys():
    old = json.loads(smoke().to_json_best_effort())
    new = smoke()
    new.train.steps, new.train.eval_every, new.schedule.learning_rate = 5, 7, 1e-4  # may change
    assert resume_problems(old, json.loads(new.to_json_best_effort())) == []
    new.model.core.input_pool = 1
    new.data.synthetic_seed = 3
    new.optimizer.name = "adam"
    new.train.ema_decay = 0.9
    problems = resume_problems(old, json.loads(new.to_json_best_effort()))
    assert len(problems) == 4
    assert any(p.startswith("model.core.input_pool: was 2") and "now 1" in p for p in problems)
    assert any(p.startswith("data.synthetic_seed") for p in problems)


def test_unknown_keys_are_named_with_the_known_ones():
    [problem] = unknown_key_problems(smoke(), ["train.bogus", "train.steps"])
    assert "--config.train.bogus" in problem and "eval_every" in problem


# --------------------------------------------------------------------------- the command line


def test_bad_config_values_exit_2_before_any_work(tmp_path):
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    result = run_train(workdir, "--config.schedule.learning_rate=-1", "--config.data.validation_tier=bogus",
                       "--config.train.eval_every=0", "--config.train.loss=bogus", "--config.schedule.name=bogus",
                       env={"XDG_CACHE_HOME": str(cache)}, timeout=120)
    assert result.returncode == INPUT_ERROR_EXIT, result.stderr[-3000:]
    for key in ("schedule.learning_rate = -1", "data.validation_tier = 'bogus'", "train.eval_every = 0",
                "train.loss = 'bogus'", "schedule.name = 'bogus'"):
        assert key in result.stderr
    assert "Traceback" not in result.stderr
    assert not workdir.exists() and not cache.exists()  # nothing written, no data generated


def test_unknown_config_key_is_one_line(tmp_path):
    result = run_train(tmp_path / "run", "--config.train.bogus=1", timeout=120)
    assert result.returncode == INPUT_ERROR_EXIT
    assert "--config.train.bogus: no such config key" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_training_on_a_locked_workdir_exits_2(tiny_store, tmp_path):
    from sensorium_jax.training.workdir import WorkdirLock

    workdir = tmp_path / "run"
    with WorkdirLock(workdir):  # a training holding the workdir (this process)
        result = run_train(workdir, f"--config.data.store={tiny_store}", timeout=120)
    assert result.returncode == INPUT_ERROR_EXIT, result.stderr[-3000:]
    assert "locked by a running training" in result.stderr and f"PID {os.getpid()}" in result.stderr
    assert str(workdir) in result.stderr
    assert not (workdir / "config.json").exists() and not (workdir / "metrics.jsonl").exists()


def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
    from sensorium_jax.training.workdir import WorkdirLock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from sensorium_jax.training.workdir import WorkdirLock; "
        f"lock = WorkdirLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(600)")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(InputDataError, match=f"PID {holder.pid}"):
        WorkdirLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".lock").exists()
    WorkdirLock(tmp_path).acquire().release()


def test_incompatible_rerun_exits_2_and_leaves_the_workdir_alone(tiny_store, tmp_path):
    workdir = tmp_path / "run"
    config = smoke()
    config.data.store = str(tiny_store)
    (workdir / "checkpoints" / "latest" / "10").mkdir(parents=True)  # a finished checkpoint's folder
    saved = config.to_json_best_effort(indent=2)
    (workdir / "config.json").write_text(saved)
    result = run_train(workdir, f"--config.data.store={tiny_store}", "--config.model.core.input_pool=1",
                       "--config.optimizer.name=adam", timeout=120)
    assert result.returncode == INPUT_ERROR_EXIT, result.stderr[-3000:]
    assert "model.core.input_pool: was 2 in the workdir's config, now 1" in result.stderr
    assert "optimizer.name: was 'adamw'" in result.stderr
    assert (workdir / "config.json").read_text() == saved
    assert not (workdir / "metrics.jsonl").exists()


def test_kill_and_resume_logs_each_step_once(tiny_store, tmp_path):
    workdir = tmp_path / "run"
    options = (f"--config.data.store={tiny_store}", "--config.train.eval_every=10", "--config.train.log_every=5")
    process = start_train(workdir, *options, "--config.train.steps=1000")
    latest = workdir / "checkpoints" / "latest"
    wait_for(lambda: (latest / "10").is_dir() and any(r["step"] > 10 for r in metrics(workdir)), process)
    process.send_signal(signal.SIGKILL)  # its lock file stays behind
    process.communicate()
    assert any(r["step"] > 10 for r in metrics(workdir))

    result = run_train(workdir, *options, "--config.train.steps=30")
    assert result.returncode == 0, result.stderr[-3000:]
    keys = [(r["step"], r["kind"]) for r in metrics(workdir)]
    assert len(keys) == len(set(keys)), keys
    assert {(s, "train") for s in (5, 10, 15, 20, 25, 30)} <= set(keys)
    assert {(s, "validation") for s in (0, 10, 20, 30)} <= set(keys)


def test_sigint_saves_a_checkpoint_at_the_step_and_the_rerun_continues(tiny_store, tmp_path):
    workdir = tmp_path / "run"
    options = (f"--config.data.store={tiny_store}", "--config.train.eval_every=1000", "--config.train.log_every=5")
    process = start_train(workdir, *options, "--config.train.steps=100000")
    wait_for(lambda: any(r["kind"] == "train" for r in metrics(workdir)), process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == INTERRUPTED_EXIT, stderr[-3000:]
    line = next(line for line in stderr.splitlines() if line.startswith("interrupted at step"))
    step = int(line.split()[3].rstrip(";"))
    assert "checkpoint saved in" in line and "rerun the same command to resume" in line
    assert (workdir / "checkpoints" / "latest" / str(step)).is_dir()

    result = run_train(workdir, *options, f"--config.train.steps={step + 3}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming from step {step}" in result.stdout
    assert json.loads((workdir / "summary.json").read_text())["steps"] == step + 3


def test_a_text_file_named_npy_is_not_called_pickled_data(tmp_path):
    from sensorium_jax.data.validation import load_npy

    path = tmp_path / "responses.npy"
    path.write_text("1 2 3\n")
    with pytest.raises(InputDataError) as error:
        load_npy(path, "responses")
    assert "not a NumPy .npy file (bad magic" in str(error.value) and str(path) in str(error.value)
    assert "pickle" not in str(error.value)
    np.save(tmp_path / "good.npy", np.zeros(3))
    assert load_npy(tmp_path / "good.npy", "responses").shape == (3,)
