"""Ensembles as one program, whole-trial windows, and the parameter EMA in the train step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from sensorium_jax.models import build_model, get_loss
from sensorium_jax.models.windows import predict_frames, window_starts
from sensorium_jax.training.mesh import make_data_mesh, replicate
from sensorium_jax.training.state import create_train_state
from sensorium_jax.training.steps import ema_decay_at, make_train_step, model_loss
from test_models import make_batch, make_card, tiny_config


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

    rematerialised = "remat" in str(jax.make_jaxpr(jax.grad(loss))(params))
    return (*jax.jit(jax.value_and_grad(loss))(params), rematerialised)


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
    loss_a, grads_a, remat_a = _loss_and_grads(base, card, batch)
    loss_b, grads_b, remat_b = _loss_and_grads(remat, card, batch)
    assert remat_b and not remat_a, "the option must put the layers under jax.checkpoint"
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
