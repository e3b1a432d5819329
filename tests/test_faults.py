"""Fault injection: a killed run, a damaged checkpoint or a full disk never leaves a workdir that
ends the next run with a traceback or a silently different trajectory.

`train.py` runs as a subprocess (SIGKILL is real); one uninterrupted 30-step run is the reference
every recovered run must end on, parameters and `metrics.jsonl` records alike.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from sensorium_jax.training import checkpointing

REPO = Path(__file__).resolve().parents[1]
STEPS, EVAL_EVERY = 30, 10
VOLATILE = ("time", "clips_per_second")  # wall-clock fields differ between any two runs

# Runs train.py in this interpreter; with FAULT_SLOW_SAVE set, each array write of a save waits a
# little first, so a SIGKILL seen to land while a save's temporary folder exists lands inside it.
# With FAULT_EARLY_REPORT set, a failed orbax read has a read still in flight report to the closed
# event loop before the error reaches the caller, as tensorstore's native callback does
# (PyErr_Print: sys.excepthook) when a read of the damaged checkpoint finishes in that window.
LAUNCHER = f"""
import os, runpy, sys, time
if os.environ.get("FAULT_SLOW_SAVE"):
    from orbax.checkpoint._src.serialization import serialization
    real = serialization.async_serialize_from_host
    async def slow(*args, **kwargs):
        time.sleep(0.05)
        return await real(*args, **kwargs)
    serialization.async_serialize_from_host = slow
if os.environ.get("FAULT_EARLY_REPORT"):
    import asyncio
    from orbax.checkpoint._src import asyncio_utils
    real_run_sync = asyncio_utils.run_sync
    def run_sync_with_an_early_report(coro):
        try:
            return real_run_sync(coro)
        except Exception:
            closed = asyncio.new_event_loop()
            closed.close()
            try:
                closed.call_soon_threadsafe(print)
            except RuntimeError as report:
                sys.excepthook(RuntimeError, report, report.__traceback__)
            raise
    asyncio_utils.run_sync = run_sync_with_an_early_report
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path({str(REPO / "train.py")!r}, run_name="__main__")
"""


def _command(store: Path, workdir: Path) -> list[str]:
    return [sys.executable, "-c", LAUNCHER, "--config", str(REPO / "configs" / "smoke.py"), "--workdir", str(workdir),
            f"--config.data.store={store}", f"--config.train.steps={STEPS}", f"--config.train.eval_every={EVAL_EVERY}"]


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, JAX_PLATFORMS="cpu", **extra)


def _train(store: Path, workdir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(store, workdir), env=_env(**env), capture_output=True, text=True, timeout=600,
                          cwd=REPO)


def _params(step_dir: Path) -> list[np.ndarray]:
    manager = checkpointing.Checkpoints(step_dir.parents[2])
    kind, step = step_dir.parent.name, int(step_dir.name)
    restored = getattr(manager, kind).restore(step, args=checkpointing.ocp.args.Composite(
        state=checkpointing.ocp.args.StandardRestore()))
    manager.close()
    return [np.asarray(x) for x in jax.tree.leaves(restored["state"]["params"])]


def _records(workdir: Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in lines if line.strip()]


def _assert_same_run(reference: Path, workdir: Path) -> None:
    final = f"checkpoints/latest/{STEPS}"
    for a, b in zip(_params(reference / final), _params(workdir / final), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    expected, found = _records(reference), _records(workdir)
    assert [(r["step"], r["kind"]) for r in found] == [(r["step"], r["kind"]) for r in expected]
    for a, b in zip(expected, found):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], str):
                assert a[key] == b[key]
                continue
            np.testing.assert_allclose(np.asarray(jax.tree.leaves(a[key]), float),
                                       np.asarray(jax.tree.leaves(b[key]), float), rtol=1e-5, err_msg=key)


@pytest.fixture(scope="module")
def reference(tiny_store, tmp_path_factory) -> Path:
    """One uninterrupted run: latest keeps steps 20 and 30, best the best of 10/20/30."""
    workdir = tmp_path_factory.mktemp("faults") / "reference"
    result = _train(tiny_store, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _copy(reference: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    return workdir


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """SIGKILLs `process` once `ready()` holds; False if it ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            return False
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.01)
    process.kill()
    raise AssertionError("the run neither reached the kill point nor ended")


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_a_random_point_then_rerun_ends_on_the_uninterrupted_run(seed, tiny_store, reference, tmp_path):
    rng = random.Random(seed)
    after_records, delay = rng.randint(1, 5), rng.uniform(0.0, 1.5)
    workdir = tmp_path / "run"
    metrics = workdir / "metrics.jsonl"
    seen: dict[str, float] = {}

    def ready() -> bool:
        if "at" not in seen and metrics.exists() and len(metrics.read_text().splitlines()) >= after_records:
            seen["at"] = time.time()
        return "at" in seen and time.time() - seen["at"] >= delay

    process = subprocess.Popen(_command(tiny_store, workdir), env=_env(), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _kill_when(process, ready), f"the run ended before the kill point ({after_records} records + {delay:.2f}s)"
    result = _train(tiny_store, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_run(reference, workdir)


def test_sigkill_during_an_asynchronous_save_then_rerun_ends_on_the_uninterrupted_run(tiny_store, reference, tmp_path):
    workdir = tmp_path / "run"
    latest = workdir / "checkpoints" / "latest"

    def saving_step_20() -> bool:  # orbax writes into "20.orbax-checkpoint-tmp-*", renamed when done
        return latest.is_dir() and any(p.name.startswith("20.") for p in latest.iterdir())

    process = subprocess.Popen(_command(tiny_store, workdir), env=_env(FAULT_SLOW_SAVE="1"), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _kill_when(process, saving_step_20)
    assert not (latest / "20").exists(), "the kill did not land inside the save"
    result = _train(tiny_store, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_run(reference, workdir)


def _largest_array_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in p.as_posix()]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate_array(step_dir: Path) -> Path:
    path = _largest_array_file(step_dir)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 3)
    return step_dir


def _truncate_every_array(step_dir: Path) -> Path:
    """Every array data file cut short: which file holds the parameters (all that `load` reads)
    depends on the order the asynchronous writes finished in."""
    for path in (p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in p.as_posix()):
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 3)
    return step_dir


def _garble_meta(step_dir: Path) -> Path:
    (step_dir / "meta" / "metadata").write_text('{"plateau": {"best": 0.1, "be')
    return step_dir


@pytest.mark.parametrize("damage", [_truncate_array, _garble_meta], ids=["truncated_array", "garbled_meta"])
def test_damaged_latest_checkpoint_resumes_from_the_older_one(damage, tiny_store, reference, tmp_path):
    workdir = _copy(reference, tmp_path)
    damaged = damage(workdir / "checkpoints" / "latest" / str(STEPS))
    result = _train(tiny_store, workdir, FAULT_EARLY_REPORT="1")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: checkpoint")]
    assert len(warnings) == 1 and str(damaged) in warnings[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"Resuming from step {STEPS - EVAL_EVERY}" in result.stdout
    assert (workdir / "checkpoints" / "damaged" / f"latest-{STEPS}").is_dir()  # kept aside, not deleted
    _assert_same_run(reference, workdir)


def test_all_latest_damaged_resumes_from_best_at_its_step(tiny_store, reference, tmp_path):
    """best has no iterator item: the iterator is set to best's step (batches are a function of it)."""
    workdir = _copy(reference, tmp_path)
    best_step = int(next((workdir / "checkpoints" / "best").iterdir()).name)
    for step_dir in (workdir / "checkpoints" / "latest").iterdir():
        _truncate_array(step_dir)
    result = _train(tiny_store, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming from step {best_step} in {workdir / 'checkpoints' / 'best'}" in result.stdout
    assert "Traceback" not in result.stderr
    _assert_same_run(reference, workdir)


def test_every_checkpoint_damaged_is_one_line_and_exit_status_2(tiny_store, reference, tmp_path):
    workdir = _copy(reference, tmp_path)
    for kind in ("latest", "best"):
        for step_dir in (workdir / "checkpoints" / kind).iterdir():
            _garble_meta(step_dir)
    result = _train(tiny_store, workdir)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "intact checkpoint" in errors[0], result.stderr[-3000:]
    assert not any(line.startswith("warning:") for line in result.stderr.splitlines())


def test_load_skips_a_damaged_best_checkpoint(reference, tmp_path, capsys):
    import sensorium_jax

    workdir = _copy(reference, tmp_path)
    best = next((workdir / "checkpoints" / "best").iterdir())
    _truncate_every_array(best)
    predictor = sensorium_jax.load(workdir)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: checkpoint")]
    assert len(warnings) == 1 and str(best) in warnings[0], err
    assert predictor.source == str(workdir / "checkpoints" / "latest" / str(STEPS))


def test_load_with_every_checkpoint_damaged_is_one_line(reference, tmp_path, capsys):
    import sensorium_jax
    from sensorium_jax.errors import InputDataError

    workdir = _copy(reference, tmp_path)
    for step_dir in (workdir / "checkpoints").glob("*/*"):
        _garble_meta(step_dir)
    with pytest.raises(InputDataError, match="intact checkpoint") as caught:
        sensorium_jax.load(workdir)
    assert "\n" not in str(caught.value)
    with pytest.raises(InputDataError, match="damaged"):
        sensorium_jax.load(workdir / "checkpoints" / "latest" / str(STEPS))


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(smoke_config, reference, tmp_path, monkeypatch):
    """The save of step 20 fails with ENOSPC in orbax's array writes; step 10 stays whole."""
    import sensorium_jax
    from orbax.checkpoint._src.serialization import serialization

    from sensorium_jax.training.loop import train_and_evaluate

    smoke_config.train.steps, smoke_config.train.eval_every = STEPS, EVAL_EVERY
    real = serialization.async_serialize_from_host
    full = {"disk": False}

    async def write(*args, **kwargs):
        if full["disk"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real(*args, **kwargs)

    def fill_disk(step: int) -> None:
        full["disk"] = full["disk"] or step == 15

    monkeypatch.setattr(serialization, "async_serialize_from_host", write)
    workdir = tmp_path / "run"
    with pytest.raises(Exception, match="No space left on device"):
        train_and_evaluate(smoke_config, workdir, on_step=fill_disk)
    monkeypatch.setattr(serialization, "async_serialize_from_host", real)

    assert checkpointing.Checkpoints(workdir).latest.all_steps() == [10]
    assert sensorium_jax.load(workdir).source == str(workdir / "checkpoints" / "best" / "10")
    train_and_evaluate(smoke_config, workdir)  # space again: resumes from 10
    _assert_same_run(reference, workdir)


def test_abandoned_read_logs_of_a_damaged_checkpoint_are_dropped_and_others_kept():
    """asyncio reports the damaged checkpoint's read task ("Task exception was never retrieved",
    with a traceback) after the one-line warning; that log is dropped, any other error kept."""
    import logging

    from sensorium_jax.training.checkpointing import ignore_abandoned_reads

    ignore_abandoned_reads()
    read = logging.LogRecord("asyncio", logging.ERROR, "/usr/lib/python3.11/asyncio/base_events.py", 1,
                             "Task exception was never retrieved\nfuture: <Task finished "
                             "coro=<_read_array_index_and_device_put() done>", None, None)
    other = logging.LogRecord("asyncio", logging.ERROR, "/usr/lib/python3.11/asyncio/base_events.py", 1,
                              "Task exception was never retrieved\nfuture: <Task finished coro=<serve()>", None, None)
    assert not logging.getLogger("asyncio").filter(read)
    assert logging.getLogger("asyncio").filter(other)


def test_a_checkpoint_of_another_layout_is_refused_in_one_line_and_kept(tiny_store, tmp_path):
    """An intact checkpoint of another train-state layout (another model, or one written before
    a layout change) is not "damaged": resuming refuses it by name and moves nothing."""
    from sensorium_jax.errors import InputDataError
    from sensorium_jax.training import checkpointing
    from sensorium_jax.training.loop import build_training, device_batches, train_and_evaluate
    from sensorium_jax.training.mesh import make_data_mesh
    from sensorium_jax.data.datasets import open_training_store
    from toy_config import get_config

    config = get_config()
    config.data.store = str(tiny_store)
    workdir = tmp_path / "run"
    train_and_evaluate(config, workdir)
    steps_before = checkpointing.Checkpoints(workdir).latest.all_steps()

    same = build_training(config, open_training_store(config.data), make_data_mesh())
    checkpoints = checkpointing.Checkpoints(workdir)
    assert checkpoints.layout_mismatch(checkpointing.LATEST, steps_before[-1], same.state) == ""
    checkpoints.close()

    other = get_config()
    other.data.store = str(tiny_store)
    other.model.channels = 6  # the saved filters have 4
    mesh = make_data_mesh()
    setup = build_training(other, open_training_store(other.data), mesh)
    checkpoints = checkpointing.Checkpoints(workdir)
    with pytest.raises(InputDataError, match=r"another layout \(.*shape .*\)"):
        checkpoints.resume(setup.state, device_batches(setup.dataset, mesh, other))
    checkpoints.close()
    assert checkpointing.Checkpoints(workdir).latest.all_steps() == steps_before
    assert not (workdir / "checkpoints" / checkpointing.DAMAGED).exists()


def test_abandoned_reads_ending_in_other_threads_print_nothing_and_other_errors_still_print():
    """A finished read of the damaged checkpoint hands its result to the closed event loop from
    a reader thread: through a concurrent.futures callback (logged), the thread's own exception
    (threading.excepthook) or tensorstore's native callback, which reports with PyErr_Print
    (sys.excepthook, a bare traceback). None may print a traceback; another error still does."""
    script = textwrap.dedent("""
        import concurrent.futures, sys, threading
        from sensorium_jax.training.checkpointing import ignore_abandoned_reads

        def closed_loop(*_):
            raise RuntimeError("Event loop is closed")

        def native_report(message):  # what PyErr_Print does with the pending error
            try:
                raise RuntimeError(message)
            except RuntimeError as error:
                sys.excepthook(RuntimeError, error, error.__traceback__)

        ignore_abandoned_reads()
        future = concurrent.futures.Future()
        future.add_done_callback(closed_loop)
        future.set_result(None)
        for target in (closed_loop, lambda: (_ for _ in ()).throw(ValueError("another error"))):
            thread = threading.Thread(target=target)
            thread.start()
            thread.join()
        native_report("Event loop is closed")
        native_report("another native error")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Event loop is closed" not in result.stderr
    assert "ValueError: another error" in result.stderr
    assert "RuntimeError: another native error" in result.stderr
