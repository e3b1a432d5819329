"""The trainer learns, shards, resumes exactly, runs multi-process and stops on NaN."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from sensorium_jax.data.store import open_store
from sensorium_jax.training import checkpointing, loop
from sensorium_jax.training.logging_utils import read_metrics
from sensorium_jax.training.loop import NonFiniteLossError, train_and_evaluate

REPO = Path(__file__).resolve().parents[1]


def _latest_params(workdir: Path) -> list[np.ndarray]:
    manager = checkpointing.Checkpoints(workdir)
    step = manager.latest_step()
    restored = manager.latest.restore(step, args=checkpointing.ocp.args.Composite(
        state=checkpointing.ocp.args.StandardRestore()))
    manager.close()
    return [np.asarray(x) for x in jax.tree.leaves(restored["state"]["params"])]


def test_smoke_config_learns_a_fraction_of_the_oracle_ceiling(smoke_config, tmp_path):
    """The smoke config on the tiny preset, end to end: records, summary, checkpoints, learning.

    Bars by measurement (seeds 0-2, 300 steps): untrained -0.02-0.00, best 0.25-0.30 against
    an oracle ceiling of 0.65 (0.39-0.46 of it). The bars, +0.15 over untrained and 0.3 of the
    ceiling, leave room for run-to-run noise but fail when positions, features or the data path
    break (a mouse whose readout map is wrong stays below 0.07; one such mouse of two gives
    0.16-0.18, under the bar).
    """
    summary = train_and_evaluate(smoke_config, tmp_path)
    validations = read_metrics(tmp_path, "validation")
    assert [v["step"] for v in validations] == [0, 100, 200, 300]  # untrained, then every eval_every
    losses = [r["loss"] for r in read_metrics(tmp_path, "train")]
    assert len(losses) == 15 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:3])
    assert summary.steps == 300
    assert summary.best_validation_correlation == max(v["validation_correlation"] for v in validations[1:])
    # the ceiling: the neuron-weighted mean of the mice's oracle-tier ceilings (seed 0: 0.681083 and
    # 0.616832, which tests/test_synthetic.py checks against the metrics on the ground-truth rates)
    store = open_store(smoke_config.data.store)
    neurons = [store.meta(mouse).n_neurons for mouse in store.mice]
    assert summary.oracle_ceiling == pytest.approx(np.average([0.681083, 0.616832], weights=neurons), abs=1e-5)
    untrained = validations[0]["validation_correlation"]
    assert abs(untrained) < 0.1
    assert summary.best_validation_correlation > untrained + 0.15
    assert summary.best_validation_correlation > 0.3 * summary.oracle_ceiling
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["best_step"] == summary.best_step
    assert json.loads((tmp_path / "dataset_card.json").read_text())["mice"]
    assert checkpointing.Checkpoints(tmp_path).latest_step() == 300
    assert Path(summary.checkpoint).is_dir()


def test_interrupted_run_resumes_on_the_same_trajectory(smoke_config, tmp_path):
    smoke_config.train.steps = 30
    smoke_config.train.eval_every = 10
    straight = tmp_path / "straight"
    train_and_evaluate(smoke_config, straight)

    interrupted = tmp_path / "interrupted"

    def crash(step: int) -> None:
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(smoke_config, interrupted, on_step=crash)
    assert checkpointing.Checkpoints(interrupted).latest_step() == 10
    train_and_evaluate(smoke_config, interrupted)

    for a, b in zip(_latest_params(straight), _latest_params(interrupted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    straight_losses = [r["loss"] for r in read_metrics(straight, "train")]
    resumed_losses = [r["loss"] for r in read_metrics(interrupted, "train") if r["step"] > 10]
    np.testing.assert_allclose(straight_losses[-len(resumed_losses):], resumed_losses, rtol=1e-5)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(smoke_config, tmp_path, monkeypatch):
    smoke_config.train.steps = 40
    smoke_config.train.eval_every = 10
    smoke_config.train.log_every = 5
    real_global_batch = loop.global_batch
    calls = {"n": 0}

    def poisoned(local, mesh):
        calls["n"] += 1
        if calls["n"] > 12:
            local = dict(local, responses=np.full_like(local["responses"], np.nan))
        return real_global_batch(local, mesh)

    monkeypatch.setattr(loop, "global_batch", poisoned)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train_and_evaluate(smoke_config, tmp_path)
    checkpoints = checkpointing.Checkpoints(tmp_path)
    assert checkpoints.latest_step() == 10
    params = _latest_params(tmp_path)
    assert all(np.all(np.isfinite(p)) for p in params)


def _run_losses(devices: int, store: Path, workdir: Path) -> list[float]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "scripts" / "train_losses.py"), str(store), str(workdir),
         str(REPO / "configs")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    payload = json.loads(line[len("RESULT "):])
    assert payload["devices"] == devices
    return payload["losses"]


@pytest.fixture(scope="module")
def one_device_losses(tiny_store, tmp_path_factory) -> list[float]:
    """The smoke config's first 20 per-step losses on one device (shared by the comparisons)."""
    return _run_losses(1, tiny_store, tmp_path_factory.mktemp("one_device"))


def test_eight_devices_give_the_same_losses_as_one(one_device_losses, tiny_store, tmp_path):
    one = one_device_losses
    eight = _run_losses(8, tiny_store, tmp_path / "eight")
    assert len(one) == len(eight) == 20
    np.testing.assert_allclose(one, eight, rtol=2e-4, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fatal_lines(err: str) -> str:
    """The lines that say why a process died, which a long thread dump would push out of view."""
    keys = ("F0", "E0", "Error", "error", "Fatal", "fatal", "timed out", "DEADLINE", "UNAVAILABLE")
    return "\n".join(line for line in err.splitlines() if any(k in line for k in keys))[-4000:] + "\n...\n"


def test_two_process_distributed_run_trains_like_one_process(one_device_losses, tiny_store, tmp_path):
    port = _free_port()
    workdir = tmp_path / "distributed"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    processes = [
        subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs" / "smoke.py"),
             "--workdir", str(workdir), f"--config.data.store={tiny_store}", "--config.train.steps=20",
             "--config.train.eval_every=10", "--config.train.log_every=1",
             f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={index}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )
        for index in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    report = "\n".join(
        f"--- process {i} (exit {p.returncode}):\n{_fatal_lines(err)}\n{err[-1500:]}"
        for i, (p, (_, err)) in enumerate(zip(processes, outputs))
    )
    assert all(p.returncode == 0 for p in processes), report
    assert "best validation correlation" in outputs[0][0]
    assert checkpointing.Checkpoints(workdir).latest_step() == 20
    records = read_metrics(workdir, "train")
    assert [r["step"] for r in records] == list(range(1, 21))
    # the same global batches and the same step on two processes: the one-process losses
    np.testing.assert_allclose([r["loss"] for r in records], one_device_losses, rtol=2e-4, atol=1e-5)


def test_train_step_compiles_once(smoke_config):
    """After the first step nothing recompiles: state shardings and dtypes are stable."""
    from flax import nnx

    from sensorium_jax.data.pipeline import make_train_dataset
    from sensorium_jax.data.store import open_store
    from sensorium_jax.models import build_model, get_loss
    from sensorium_jax.training.mesh import global_batch, make_data_mesh, replicate
    from sensorium_jax.training.schedules import learning_rate_schedule, make_optimizer
    from sensorium_jax.training.state import create_train_state
    from sensorium_jax.training.steps import make_train_step

    store = open_store(smoke_config.data.store)
    mesh = make_data_mesh()
    tx = make_optimizer(smoke_config.optimizer, learning_rate_schedule(smoke_config.schedule, 10))
    graphdef, state = create_train_state(build_model(smoke_config.model, store.card(), nnx.Rngs(0)), tx)
    state = replicate(state, mesh)
    step = make_train_step(graphdef, tx, get_loss("poisson"), mesh)
    batches = iter(make_train_dataset(store, clip_length=smoke_config.data.clip_length,
                                      clips_per_mouse=smoke_config.data.clips_per_mouse, seed=0))
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, duration, **kw: compiles.append(name) if name == "/jax/core/compile/backend_compile_duration" else None
    )
    state, _ = step(state, global_batch(next(batches), mesh))
    first = len(compiles)
    for _ in range(3):
        state, metrics = step(state, global_batch(next(batches), mesh))
        state = state.replace(lr_scale=replicate(np.float32(0.5), mesh))  # as the plateau schedule does
    jax.block_until_ready(metrics)
    assert first >= 1
    assert len(compiles) == first


def _error_summary(stderr: str) -> str:
    """The lines that say why a subprocess died, not the thread dumps after them."""
    lines = [l for l in stderr.splitlines() if "trial/s" not in l and "step/s" not in l]
    key = [l for l in lines if any(w in l for w in ("Error", "error", "Fatal", "Check failed", "abort"))]
    return "\n".join(key[:20] + ["..."] + lines[-30:])


def _patch_products_step(devices: int, store: Path) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "scripts" / "patch_products_step.py"), str(store), str(REPO / "configs")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_patch_products_on_eight_devices_loop_over_each_devices_own_frames(tiny_store):
    """The CPU form's loops over chunks of frames keep every chunk split over the devices as
    the batch is: no device gathers the batch to compute all of it, and the losses are one
    device's."""
    one, eight = _patch_products_step(1, tiny_store), _patch_products_step(8, tiny_store)
    assert eight["devices"] == 8
    assert eight["all_gathers"] == []
    np.testing.assert_allclose(one["losses"], eight["losses"], rtol=2e-4, atol=1e-5)
