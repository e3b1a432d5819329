"""Ensembles as one program (members are independent runs: member k equals the separate run
with seed k), whole-trial windows, and the parameter EMA in the train step."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from sensorium_jax.config import load_config
from sensorium_jax.models import build_model, default_model_config, get_loss
from sensorium_jax.models.ensemble import member_run_config, member_slice
from sensorium_jax.models.windows import predict_frames, window_starts
from sensorium_jax.training.mesh import make_data_mesh, replicate
from sensorium_jax.training.state import create_train_state
from sensorium_jax.training.steps import ema_decay_at, make_train_step, model_loss
from test_models import make_batch, make_card, tiny_config

REPO = Path(__file__).resolve().parents[1]


def ensemble_config(members=3, loop="native"):
    return ml_collections.ConfigDict(
        {"name": "ensemble", "members": members, "member": tiny_config(), "kernels": loop}
    )


def as_jax(batch):
    return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.mark.parametrize("loop", ["native", "folded"])
def test_each_member_gets_exactly_its_own_gradient(loop):
    card = make_card()
    ensemble = build_model(ensemble_config(3, loop), card, nnx.Rngs(0))
    batch = as_jax(make_batch(card, [0, 1, 1]))
    loss_fn = get_loss("poisson")
    graphdef, params, rest = nnx.split(ensemble, nnx.Param, ...)

    def ensemble_loss(p):
        return model_loss(nnx.merge(graphdef, p, rest, copy=True), batch, loss_fn)[0]

    grads = jax.grad(ensemble_loss)(params)
    member_graphdef, _, _ = nnx.split(build_model(tiny_config(), card, nnx.Rngs(1)), nnx.Param, ...)
    for e in range(3):
        p_e = jax.tree.map(lambda x: x[e], params["members"])
        r_e = jax.tree.map(lambda x: x[e], rest["members"])

        def member_loss(p):
            return model_loss(nnx.merge(member_graphdef, p, r_e, copy=True), batch, loss_fn)[0]

        alone = jax.grad(member_loss)(p_e)
        stacked = jax.tree.map(lambda x: x[e], grads["members"])
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(stacked)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_members_differ_and_prediction_is_their_mean():
    card = make_card()
    ensemble = build_model(ensemble_config(3), card, nnx.Rngs(0))
    batch = as_jax(make_batch(card, [0, 1]))
    members = np.asarray(ensemble.member_predictions(batch, train=False))
    for loop in ("folded",):
        looped = build_model(ensemble_config(3, loop), card, nnx.Rngs(0))
        np.testing.assert_allclose(
            np.asarray(looped.member_predictions(batch, train=False)), members, rtol=1e-5, atol=1e-6
        )
    assert members.shape[0] == 3
    assert np.abs(members[0] - members[1]).max() > 1e-3, "members built from one stream must differ"
    np.testing.assert_allclose(np.asarray(ensemble(batch)), members.mean(0), rtol=1e-6)
    assert ensemble.frames_lost() == build_model(tiny_config(), card, nnx.Rngs(0)).frames_lost()
    assert ensemble.readout_positions().pixels.shape == (2, card.max_neurons, 2)


@pytest.mark.parametrize("loop", ["native", "folded"])
def test_ensemble_train_step_lowers_every_members_loss(loop):
    card = make_card()
    ensemble = build_model(ensemble_config(2, loop), card, nnx.Rngs(0))
    mesh = make_data_mesh()
    tx = optax.adam(1e-2)
    graphdef, state = create_train_state(ensemble, tx)
    state = replicate(state, mesh)
    step = make_train_step(graphdef, tx, get_loss("poisson"), mesh)
    batch = as_jax(make_batch(card, [0, 1]))

    def member_losses(s):
        model = nnx.merge(graphdef, s.params, s.rest, copy=True)
        preds = model.member_predictions(batch, train=False)
        from sensorium_jax.models import align_targets
        targets, nm, fm = align_targets(batch, preds.shape[2])
        return np.asarray([get_loss("poisson")(p, targets, nm, fm) for p in preds])

    before = member_losses(state)
    stats_before = [np.asarray(x) for x in jax.tree.leaves(nnx.state(state.rest, nnx.BatchStat))]
    for _ in range(15):
        state, metrics = step(state, batch)
    after = member_losses(state)
    assert np.all(after < before - 0.05), (before, after)
    stats_after = [np.asarray(x) for x in jax.tree.leaves(nnx.state(state.rest, nnx.BatchStat))]
    for b, a in zip(stats_before, stats_after):  # every member's BatchNorm statistics moved
        assert np.all(np.abs(a - b).reshape(a.shape[0], -1).max(axis=1) > 0)


def test_ensemble_of_ensembles_is_refused():
    config = ensemble_config(2)
    config.member = ensemble_config(2)
    with pytest.raises(ValueError, match="ensembles"):
        build_model(config, make_card(), nnx.Rngs(0))


# -- members are independent runs


def tiny_ensemble(store, members=2):
    """Two members of a shrunk smoke model (BatchNorm, a sampling readout) with CutMix on, so
    batches, statistics and augmentation keys must all be each member's own."""
    config = load_config(REPO / "configs" / "smoke.py")
    config.data.store = str(store)
    config.data.clip_length = 12
    config.data.clips_per_mouse = 2
    config.data.prefetch = 1
    config.data.read_threads = 1
    config.model.core.channels = (4, 4)
    config.model.core.spatial_kernels = (5, 3)
    config.model.core.temporal_kernels = (3, 3)
    config.train.cutmix.probability = 0.5
    config.optimizer.grad_clip_norm = 0.01  # clips every step, by a global norm that must be each member's own
    member = config.model
    config.model = default_model_config("ensemble")
    config.model.members = members
    config.model.member = member
    return config


def run_steps(config, store, steps):
    from sensorium_jax.data.store import open_store
    from sensorium_jax.training.loop import build_training, device_batches

    mesh = make_data_mesh()
    setup = build_training(config, open_store(store), mesh)
    batches = device_batches(setup.dataset, mesh, config)
    state = setup.state
    for _ in range(steps):
        state, _ = setup.train_step(state, next(batches))
    return to_host(state)


def to_host(tree):
    """NumPy leaves (PRNG keys as their key data), safe from the step's donated buffers."""
    def host(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return jax.tree.map(host, tree)


def assert_trees_close(a, b, rtol=2e-4, atol=2e-6):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        x, y = to_host(x), to_host(y)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("loop,sampling", [("folded", "all"), ("native", "round")])
def test_member_k_equals_the_separate_run_with_seed_k(tiny_store, loop, sampling):
    """20 steps of a 2-member ensemble against 2 separate runs (seeds 0 and 1); "round" batches
    take the mice one after another inside each member's step."""
    config = tiny_ensemble(tiny_store)
    config.model.kernels = loop
    config.data.mouse_sampling = sampling
    steps = 20
    together = run_steps(config, tiny_store, steps)
    assert together.lr_scale.shape == (2,) and together.active.tolist() == [True, True]
    for k in range(2):
        single_config = member_run_config(config, k)
        assert single_config.seed == k and single_config.model.name == "factorized"
        alone = run_steps(single_config, tiny_store, steps)
        member = lambda tree, k=k: member_slice(tree, k)  # noqa: E731
        assert_trees_close(member(together.params), alone.params)
        assert_trees_close(member(together.rest), alone.rest)  # BatchNorm statistics, RNG keys and counts
        assert_trees_close(member(together.opt_state), alone.opt_state)
    first, second = (member_slice(together.params, k) for k in range(2))
    assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second))) > 1e-3


def test_member_batches_are_the_separate_runs_batches(tiny_store):
    from sensorium_jax.data.store import open_store
    from sensorium_jax.training.loop import make_training_dataset

    config = tiny_ensemble(tiny_store, members=3)
    config.seed = 5
    store = open_store(tiny_store)
    stacked = iter(make_training_dataset(config, store))
    singles = [iter(make_training_dataset(member_run_config(config, k), store)) for k in range(3)]
    for _ in range(2):
        batch = next(stacked)
        alone = [next(s) for s in singles]
        assert batch["video"].shape[0] == 3
        for k in range(3):
            for key in alone[k]:
                np.testing.assert_array_equal(batch[key][k], alone[k][key])
    assert not np.array_equal(batch["video"][0], batch["video"][1])
    assert member_run_config(config, 2).seed == 7


def test_ensemble_initialisation_is_each_seeds_own_model():
    from sensorium_jax.models.ensemble import build_for_run

    card = make_card()
    config = ensemble_config(3, "folded")
    together = nnx.state(build_for_run(config, card, seed=4).members)
    for k in range(3):
        alone = nnx.state(build_model(tiny_config(), card, nnx.Rngs(4 + k)))
        assert_trees_close(member_slice(together, k), alone, rtol=0, atol=0)


def _ensemble_loop_config(tiny_store):
    config = tiny_ensemble(tiny_store)
    config.train.cutmix.probability = 0.0
    config.train.steps = 10
    config.train.eval_every = 2
    config.train.log_every = 1
    config.schedule.name = "plateau"
    config.schedule.update(plateau_patience=0, max_reductions=0, plateau_factor=0.1)
    return config


def scripted(scores):
    calls = []

    def score(*args, **kwargs):
        calls.append(len(calls))
        return scores[len(calls) - 1], {}

    return score, calls


# Calls in the loop's order: untrained (members 0, 1), then each evaluation's running members, then
# the ensemble's best checkpoint. Member 0: best at step 2, worse at 4: stops (patience 0, no
# reduction left). Member 1 improves at every evaluation up to step 10.
STOP_SCORES = [0.0, 0.0, 0.3, 0.1, 0.25, 0.2, 0.3, 0.35, 0.4, 0.5]


def _saved(config, workdir, kind, step):
    from sensorium_jax.data.store import open_store
    from sensorium_jax.training import checkpointing
    from sensorium_jax.training.loop import build_training

    setup = build_training(config, open_store(config.data.store), make_data_mesh())
    checkpoints = checkpointing.Checkpoints(workdir)
    state, meta = checkpoints.restore(kind, setup.state, step=step)
    checkpoints.close()
    return to_host(state), meta


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_a_members_early_stop_freezes_only_that_member_and_best_is_per_member(tiny_store, tmp_path, monkeypatch):
    import sensorium_jax
    from sensorium_jax.training import checkpointing, loop
    from sensorium_jax.training.logging_utils import read_metrics

    monkeypatch.setattr(checkpointing, "KEEP_LATEST", 10)  # every evaluation's state stays readable
    score, calls = scripted(STOP_SCORES)
    monkeypatch.setattr(loop, "validation_score", score)
    config = _ensemble_loop_config(tiny_store)
    summary = loop.train_and_evaluate(config, tmp_path)
    assert len(calls) == len(STOP_SCORES) and summary.steps == 10
    assert summary.members == [
        {"best_validation_correlation": 0.3, "best_step": 2, "stopped_early": True},
        {"best_validation_correlation": 0.4, "best_step": 10, "stopped_early": False},
    ]
    assert summary.best_validation_correlation == 0.5 and summary.best_step == 10  # the ensemble's, at its best
    validations = read_metrics(tmp_path, "validation")
    assert [v["member_validation_correlation"] for v in validations[3:]] == [[None, 0.3], [None, 0.35], [None, 0.4]]

    states = {step: _saved(config, tmp_path, checkpointing.LATEST, step) for step in (2, 4, 6, 10)}
    frozen = [member_slice((s.params, s.rest, s.opt_state), 0) for s, _ in (states[4], states[6], states[10])]
    assert _same(frozen[0], frozen[1]) and _same(frozen[0], frozen[2]), "a stopped member takes no more steps"
    assert not _same(member_slice(states[4][0].params, 1), member_slice(states[10][0].params, 1))
    assert states[10][0].active.tolist() == [False, True] and states[10][1]["stopped"] == [True, False]

    best, meta = _saved(config, tmp_path, checkpointing.BEST, 10)
    assert _same(member_slice(best.params, 0), member_slice(states[2][0].params, 0)), "member 0's best: step 2"
    assert _same(member_slice(best.params, 1), member_slice(states[10][0].params, 1)), "member 1's best: step 10"
    assert [p["best_step"] for p in meta["plateau"]] == [2, 10]
    predictor = sensorium_jax.load(tmp_path)  # predicts with every member's own best
    assert _same(predictor.variables["params"], best.params)


def test_ensemble_resumes_every_member_on_its_trajectory(tiny_store, tmp_path, monkeypatch):
    from sensorium_jax.training import checkpointing, loop

    whole, _ = scripted(STOP_SCORES)
    monkeypatch.setattr(loop, "validation_score", whole)
    loop.train_and_evaluate(_ensemble_loop_config(tiny_store), tmp_path / "whole")
    # the first part ends at step 6 (then scores its best checkpoint), the second resumes there
    parts, calls = scripted(STOP_SCORES[:7] + [0.5] + STOP_SCORES[7:])
    monkeypatch.setattr(loop, "validation_score", parts)
    first = _ensemble_loop_config(tiny_store)
    first.train.steps = 6
    loop.train_and_evaluate(first, tmp_path / "parts")
    summary = loop.train_and_evaluate(_ensemble_loop_config(tiny_store), tmp_path / "parts")
    assert len(calls) == len(STOP_SCORES) + 1 and summary.members[0]["stopped_early"]
    config = _ensemble_loop_config(tiny_store)
    (a, meta_a), (b, meta_b) = (_saved(config, tmp_path / name, checkpointing.LATEST, 10) for name in ("whole", "parts"))
    assert_trees_close((a.params, a.rest, a.opt_state, a.lr_scale), (b.params, b.rest, b.opt_state, b.lr_scale),
                       rtol=1e-6, atol=1e-7)
    assert meta_a["plateau"] == meta_b["plateau"] and meta_a["stopped"] == meta_b["stopped"] == [True, False]


def test_reference_rule_restores_only_the_member_at_a_plateau(tiny_store, tmp_path, monkeypatch):
    from sensorium_jax.training import checkpointing, loop

    monkeypatch.setattr(checkpointing, "KEEP_LATEST", 10)
    config = _ensemble_loop_config(tiny_store)
    config.train.steps, config.train.eval_every = 3, 1
    config.schedule.update(plateau_rule="reference", plateau_patience=1, max_reductions=2, restore_best=True,
                           min_learning_rate=0.0)
    # untrained 0, 0; step 1: 0.3, 0.1; step 2: 0.5, 0.2; step 3: member 0 worse (its 1st plateau:
    # back to step 2), member 1 better; then the ensemble's best checkpoint
    score, _ = scripted([0.0, 0.0, 0.3, 0.1, 0.5, 0.2, 0.4, 0.3, 0.6])
    monkeypatch.setattr(loop, "validation_score", score)
    loop.train_and_evaluate(config, tmp_path)
    step2, _ = _saved(config, tmp_path, checkpointing.LATEST, 2)
    step3, meta = _saved(config, tmp_path, checkpointing.LATEST, 3)
    best, _ = _saved(config, tmp_path, checkpointing.BEST, 3)
    assert [p["plateaus"] for p in meta["plateau"]] == [1, 0]
    assert _same(member_slice(step3.params, 0), member_slice(step2.params, 0)), "member 0 continues from step 2"
    assert _same(member_slice(best.params, 0), member_slice(step2.params, 0))
    assert not _same(member_slice(step3.params, 1), member_slice(step2.params, 1)), "member 1 goes on"
    assert _same(member_slice(best.params, 1), member_slice(step3.params, 1))


# -- whole trials in windows


def frame_forward(lost):
    """A causal toy model: frame t's prediction is the mean of input frames t - lost .. t."""

    def forward(clip):
        v = clip["video"][..., 0].mean(axis=(2, 3))  # [B, T]
        t = v.shape[1]
        out = np.stack([v[:, i - lost:i + 1].mean(1) for i in range(lost, t)], axis=1)
        return out[..., None]

    return forward


@pytest.mark.parametrize("lost", [0, 3])
def test_windows_match_one_pass_for_a_causal_model(lost):
    rng = np.random.default_rng(0)
    batch = {"video": rng.normal(size=(2, 37, 4, 5, 1)).astype(np.float32), "mouse": np.zeros(2, np.int32)}
    whole = predict_frames(frame_forward(lost), batch, frames_lost=lost, clip_length=None, pad_start=True)
    windowed = predict_frames(frame_forward(lost), batch, frames_lost=lost, clip_length=10, pad_start=True)
    assert not np.isnan(windowed).any() and windowed.shape == (2, 37, 1)
    np.testing.assert_allclose(windowed, whole, rtol=1e-6)
    unpadded = predict_frames(frame_forward(lost), batch, frames_lost=lost, clip_length=10, pad_start=False)
    assert np.isnan(unpadded[:, :lost]).all() and not np.isnan(unpadded[:, lost:]).any()
    np.testing.assert_allclose(unpadded[:, lost:], whole[:, lost:], rtol=1e-6)


def test_windows_give_each_frame_its_most_central_window():
    window = 8

    def position_in_window(clip):  # predicts the frame's position inside the window
        b, t = clip["video"].shape[:2]
        return np.broadcast_to(np.arange(t, dtype=np.float32)[None, :, None], (b, t, 1))

    batch = {"video": np.zeros((1, 30, 2, 2, 1), np.float32), "mouse": np.zeros(1, np.int32)}
    out = predict_frames(position_in_window, batch, frames_lost=0, clip_length=window, pad_start=True)[0, :, 0]
    starts = window_starts(30, window, 0)
    assert starts[0] == 0 and starts[-1] == 22 and all(b - a == 4 for a, b in zip(starts[:-2], starts[1:-1]))
    # away from the trial's ends every frame sits in the middle half of its window
    assert np.all((out[4:-4] >= 2) & (out[4:-4] <= 5)), out
    with pytest.raises(ValueError, match="shorter than the model's 40-frame clip"):
        predict_frames(position_in_window, batch, frames_lost=0, clip_length=40, pad_start=True)


# -- EMA


def test_ema_decay_warms_up_then_holds():
    steps = jnp.asarray([0, 10, 100, 100_000])
    decay = np.asarray(ema_decay_at(steps, 0.999))
    np.testing.assert_allclose(decay[:3], [0.1, 11 / 20, 101 / 110], rtol=1e-6)
    assert decay[3] == pytest.approx(0.999)


def test_train_step_keeps_an_exponential_average_of_the_parameters():
    card = make_card()
    model = build_model(tiny_config(), card, nnx.Rngs(0))
    mesh = make_data_mesh()
    tx = optax.sgd(1e-2)
    graphdef, state = create_train_state(model, tx, ema=True)
    state = replicate(state, mesh)
    step = make_train_step(graphdef, tx, get_loss("poisson"), mesh, ema_decay=0.5)
    batch = as_jax(make_batch(card, [0, 1]))
    expected = jax.tree.map(np.asarray, state.params)  # the step donates the state's buffers
    for i in range(4):
        state, _ = step(state, batch)
        d = float(ema_decay_at(jnp.asarray(i), 0.5))
        expected = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p), expected, state.params)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(state.ema_params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert state.inference_params is state.ema_params
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params))]
    assert max(moved) > 0, "the average must lag the parameters"


# -- rematerialisation


def _loss_and_grads(config, card, batch):
    model = build_model(config, card, nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        return model_loss(nnx.merge(graphdef, p, rest, copy=True), batch, get_loss("poisson"))[0]

    step = jax.jit(jax.value_and_grad(loss))
    temporaries = step.lower(params).compile().memory_analysis().temp_size_in_bytes
    return (*step(params), temporaries)


@pytest.mark.parametrize("model", ["factorized", "dwiseneuro"])
def test_remat_keeps_results_and_checkpoints_the_layers(model):
    if model == "factorized":
        card = make_card()
        base = tiny_config()
        batch = as_jax(make_batch(card, [0, 1]))
    else:
        from test_dwiseneuro import CLIP, H, W
        from test_dwiseneuro import tiny_config as dwise_config

        card = make_card(n_neurons=(5, 9), frame_shape=(H, W))
        base = dwise_config()
        base.drop_path_rate = 0.0
        base.cortex.drop_path_rate = 0.0
        base.readout.dropout = 0.0
        batch = as_jax(make_batch(card, [0, 1], frames=CLIP))
    remat = base.copy_and_resolve_references()
    if model == "factorized":
        remat.core.remat = True
    else:
        remat.remat = True
    loss_a, grads_a, stored = _loss_and_grads(base, card, batch)
    loss_b, grads_b, recomputed = _loss_and_grads(remat, card, batch)
    assert recomputed < 0.9 * stored, "the layers' activations must not all be live at once"
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_an_ensemble_pads_trials_as_its_members_do():
    """A ViV1T member predicts whole trials unpadded (`pads_start` False): its ensemble too."""
    from sensorium_jax.config import load_config

    member = load_config(REPO / "configs" / "viv1t.py", "smoke").model
    config = default_model_config("ensemble")
    config.members, config.member = 2, member
    card = make_card(frame_shape=(36, 64))
    model = nnx.eval_shape(lambda: build_model(config, card, nnx.Rngs(0)))
    assert model.pads_start is False and build_model(config.member, card, nnx.Rngs(0)).pads_start is False
    assert nnx.eval_shape(lambda: build_model(default_model_config("factorized"), card, nnx.Rngs(0))).pads_start
