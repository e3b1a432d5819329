"""Round batches (`data.mouse_sampling="round"`): one forward/backward per mouse on its own clips
(BatchNorm statistics per mouse, running averages updated mouse after mouse), one optimizer step
on the summed gradients; and epochs resolved to step counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sensorium_jax.data.sampling import ClipSampler
from sensorium_jax.models import build_model, get_loss
from sensorium_jax.training.mesh import global_batch, make_data_mesh, replicate
from sensorium_jax.training.state import create_train_state
from sensorium_jax.training.steps import make_train_step, model_loss
from test_models import make_batch, make_card, tiny_config

REPO = Path(__file__).resolve().parents[1]
MICE, CLIPS = 2, 4


def round_batch(seed: int = 1) -> dict[str, np.ndarray]:
    """Clip-major rows (mouse 0, mouse 1, mouse 0, ...) as the round sampler orders them."""
    return make_batch(make_card(), list(range(MICE)) * CLIPS, seed=seed)


def setup(round_mice: int, mesh=None):
    card = make_card()
    tx = optax.adam(1e-2)
    graphdef, state = create_train_state(build_model(tiny_config(), card, nnx.Rngs(0)), tx)
    mesh = mesh or make_data_mesh()
    step = make_train_step(graphdef, tx, get_loss("poisson"), mesh, round_mice=round_mice)
    return graphdef, tx, state, step, mesh


def manual_round(graphdef, tx, state, batch):
    """The reference trainer's round written out: the stateful model, one `nnx.grad` per mouse
    on the rows of that mouse (BatchNorm running averages change in place, in mouse order), the
    gradients summed, one update."""
    model = nnx.merge(graphdef, state.params, state.rest, copy=True)
    loss_fn, total, losses = get_loss("poisson"), None, []

    @nnx.jit
    def mouse_gradient(model, sub):
        return nnx.value_and_grad(lambda m: model_loss(m, sub, loss_fn), has_aux=True)(model)

    for mouse in range(MICE):
        rows = batch["mouse"] == mouse
        sub = {k: jnp.asarray(v[rows]) for k, v in batch.items()}
        (_, reported), grads = mouse_gradient(model, sub)
        losses.append(float(reported["loss"]))
        total = grads if total is None else jax.tree.map(jnp.add, total, grads)
    _, _, rest = nnx.split(model, nnx.Param, ...)
    updates, _ = tx.update(total, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), rest, float(np.mean(losses))


def batch_stats(rest) -> list[np.ndarray]:
    flat = jax.tree.leaves(rest, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return [np.asarray(v[...]) for v in flat if isinstance(v, nnx.BatchStat)]


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_round_sampler_takes_every_mouse_clip_major():
    lengths = [np.full(10, 30), np.full(6, 30), np.array([30, 10, 30])]
    tiers = [np.array(["train"] * 10), np.array(["train"] * 5 + ["oracle"]), np.array(["train"] * 3)]
    options = dict(clip_length=20, train_tiers=("train",), seed=3, clips_per_mouse=4)
    plan = ClipSampler(lengths, tiers, mouse_sampling="round", **options)(7)
    assert plan[:, 0].tolist() == [0, 1, 2] * 4
    assert set(plan[plan[:, 0] == 1, 1]) <= set(range(5)) and set(plan[plan[:, 0] == 2, 1]) <= {0, 2}
    mixed = ClipSampler(lengths, tiers, mouse_sampling="all", **options)(7)
    assert mixed[:, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_steps_per_epoch_is_the_largest_mouse_in_batches_of_its_clips():
    # eligible trials (train tier, >= 20 frames): 10, 5 and 2; 4 clips per mouse per step
    lengths = [np.full(10, 30), np.full(6, 30), np.array([30, 10, 30])]
    tiers = [np.array(["train"] * 10), np.array(["train"] * 5 + ["oracle"]), np.array(["train"] * 3)]
    options = dict(clip_length=20, train_tiers=("train",), seed=0)
    for sampling in ("all", "round"):
        assert ClipSampler(lengths, tiers, mouse_sampling=sampling, clips_per_mouse=4, **options).steps_per_epoch == 3
        assert ClipSampler(lengths, tiers, mouse_sampling=sampling, clips_per_mouse=5, **options).steps_per_epoch == 2
    uniform = ClipSampler(lengths, tiers, mouse_sampling="uniform", batch_size=4, **options)
    assert uniform.steps_per_epoch == 5  # 17 eligible trials in batches of 4


def test_epochs_resolve_to_step_counts_of_the_store(smoke_config):
    from sensorium_jax.data.store import open_store
    from sensorium_jax.training.loop import resolve_epochs

    store = open_store(smoke_config.data.store)
    clip, per_mouse = smoke_config.data.clip_length, smoke_config.data.clips_per_mouse
    eligible = []
    for mouse in store.mice:
        meta = store.meta(mouse)
        eligible.append(int(np.sum((np.asarray(meta.tiers) == "train") & (np.asarray(meta.lengths) >= clip))))
    per_epoch = max(-(-n // per_mouse) for n in eligible)
    assert per_epoch > 1
    assert resolve_epochs(smoke_config, store) is smoke_config  # nothing in epochs: unchanged
    smoke_config.train.max_epochs, smoke_config.train.eval_every_epochs = 7, 2
    resolved = resolve_epochs(smoke_config, store)
    assert (resolved.train.steps, resolved.train.eval_every) == (7 * per_epoch, 2 * per_epoch)
    assert smoke_config.train.steps == 300  # the caller's config is left as it was
    smoke_config.data.mouse_sampling, smoke_config.data.batch_size = "uniform", 6
    smoke_config.train.eval_every_epochs = 0
    resolved = resolve_epochs(smoke_config, store)
    assert resolved.train.steps == 7 * -(-sum(eligible) // 6) and resolved.train.eval_every == 100


def test_round_step_equals_per_mouse_gradients_summed_with_batchnorm_in_sequence():
    graphdef, tx, state, step, mesh = setup(MICE)
    batch = round_batch()
    expected_params, expected_rest, expected_loss = manual_round(graphdef, tx, state, batch)
    before = batch_stats(state.rest)
    new_state, metrics = step(replicate(state, mesh), global_batch(batch, mesh))
    assert_trees_close(new_state.params, expected_params)
    for got, want, old in zip(batch_stats(new_state.rest), batch_stats(expected_rest), before, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(got, old)  # the running averages did move
    assert float(metrics["loss"]) == pytest.approx(expected_loss, rel=1e-5)
    assert int(new_state.step) == 1

    # the same clips in one mixed batch give other statistics and another step: the test can tell
    _, _, state_all, step_all, _ = setup(0)
    mixed, _ = step_all(replicate(state_all, mesh), global_batch(batch, mesh))
    differences = [np.max(np.abs(a - b)) for a, b in zip(batch_stats(mixed.rest), batch_stats(expected_rest))]
    assert max(differences) > 1e-4


MULTI_DEVICE = """
import json, sys
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
from test_round_batches import MICE, round_batch, setup, batch_stats
from sensorium_jax.training.mesh import global_batch, replicate
from jax.sharding import AxisType
results = {}
for name, devices in (("one", jax.devices()[:1]), ("all", jax.devices())):
    mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    _, _, state, step, _ = setup(MICE, mesh)
    batch = global_batch(round_batch(), mesh)
    assert len(batch["video"].sharding.device_set) == len(devices)
    compiled = step.lower(replicate(state, mesh), batch).compile()
    hlo = compiled.as_text()
    new_state, metrics = compiled(replicate(state, mesh), batch)
    leaves = [np.asarray(x).ravel() for x in jax.tree.leaves(new_state.params)] + batch_stats(new_state.rest)
    results[name] = {"values": np.concatenate([x.ravel() for x in leaves]).tolist(),
                     "loss": float(metrics["loss"]), "all_to_all": "all-to-all" in hlo}
print("RESULT " + json.dumps({"devices": jax.device_count(), **results}))
"""


def test_round_step_on_four_devices_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", MULTI_DEVICE, str(REPO / "tests")], env=env,
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert payload["devices"] == 4
    np.testing.assert_allclose(payload["all"]["values"], payload["one"]["values"], rtol=1e-4, atol=1e-6)
    assert payload["all"]["loss"] == pytest.approx(payload["one"]["loss"], rel=1e-5)
    # clip-major rows: every device already holds a share of each mouse's clips
    assert not payload["all"]["all_to_all"]


def test_training_loop_runs_round_batches(smoke_config, tmp_path, monkeypatch):
    """The loop hands the round step the store's mice; the logged loss is the round's."""
    from sensorium_jax.data.store import open_store
    from sensorium_jax.training import loop
    from sensorium_jax.training.logging_utils import read_metrics

    seen = []
    real = loop.make_train_step

    def recording(*args, **kwargs):
        seen.append(kwargs.get("round_mice"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "make_train_step", recording)
    monkeypatch.setattr(loop, "validation_score", lambda *a, **k: (0.1, {}))
    smoke_config.data.mouse_sampling = "round"
    smoke_config.train.steps, smoke_config.train.eval_every, smoke_config.train.log_every = 2, 2, 1
    loop.train_and_evaluate(smoke_config, tmp_path)
    assert seen == [len(open_store(smoke_config.data.store).mice)] and seen[0] > 1
    losses = [r["loss"] for r in read_metrics(tmp_path, "train")]
    assert len(losses) == 2 and np.all(np.isfinite(losses))
