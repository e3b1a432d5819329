"""The factorized baseline's penalties, BatchNorm momentum, initialisation and loss scaling
against independent computations (NumPy/SciPy from the formulas, torch's initialiser)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from scipy.signal import convolve2d

from sensorium_jax.config import base_config
from sensorium_jax.config_checks import train_problems
from sensorium_jax.models import build_model, default_model_config, get_loss, poisson_loss
from sensorium_jax.models import regularizers
from sensorium_jax.models.initializers import xavier_normal
from sensorium_jax.models.losses import loss_scale, scaled_loss
from sensorium_jax.training.mesh import make_data_mesh, replicate
from sensorium_jax.training.state import create_train_state
from sensorium_jax.training.steps import make_train_step, model_loss
from test_models import make_batch, make_card, tiny_config

LAPLACE = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float64)


def numpy_spatial_penalty(kernel: np.ndarray) -> float:
    """sum over (in, out) filters of |Laplace * filter|^2 (zero padding 1) / sum |filter|^2."""
    k = np.asarray(kernel, np.float64)[0]  # [kh, kw, in, out]
    rough = sum(
        np.sum(convolve2d(k[:, :, i, o], LAPLACE, mode="same") ** 2)
        for i in range(k.shape[2]) for o in range(k.shape[3])
    )
    return rough / np.sum(k**2)


def numpy_temporal_penalty(kernel: np.ndarray) -> float:
    """The same ratio along time with [-1, 4, -1] (the reference's 1D kernel), zero padding 1."""
    k = np.asarray(kernel, np.float64)[:, 0, 0]  # [kt, in, out]
    rough = sum(
        np.sum(np.convolve(k[:, i, o], [-1.0, 4.0, -1.0], mode="same") ** 2)
        for i in range(k.shape[1]) for o in range(k.shape[2])
    )
    return rough / np.sum(k**2)


def test_laplace_penalties_equal_numpy():
    rng = np.random.default_rng(0)
    spatial = rng.normal(size=(1, 5, 5, 3, 4)).astype(np.float32)
    temporal = rng.normal(size=(6, 1, 1, 4, 4)).astype(np.float32)
    got_s = float(regularizers.laplace_l2_norm(jnp.asarray(spatial)))
    got_t = float(regularizers.temporal_laplace_l2_norm(jnp.asarray(temporal)))
    assert got_s == pytest.approx(numpy_spatial_penalty(spatial), rel=1e-5)
    assert got_t == pytest.approx(numpy_temporal_penalty(temporal), rel=1e-5)
    # scale-free: multiplying the weights changes nothing
    assert float(regularizers.laplace_l2_norm(jnp.asarray(3 * spatial))) == pytest.approx(got_s, rel=1e-5)
    # a constant filter is only rough at its zero-padded border
    flat = np.ones((1, 3, 3, 1, 1), np.float32)
    assert float(regularizers.laplace_l2_norm(jnp.asarray(flat))) == pytest.approx((4 * 1 + 4 * 4 + 0) / 9)


def test_model_penalty_is_gamma_times_the_first_layer_penalties():
    card = make_card()
    config = tiny_config(gamma_input_spatial=10.0, gamma_input_temporal=0.01)
    config.readout.gamma_readout = 0.5
    model = build_model(config, card, nnx.Rngs(0))
    first = model.core.layers[0]
    features = np.asarray(model.readout.features[...])
    l1 = sum(np.abs(features[m, :n]).sum() for m, n in enumerate(card.n_neurons))  # padding excluded
    want = (10.0 * numpy_spatial_penalty(np.asarray(first.spatial[...]))
            + 0.01 * numpy_temporal_penalty(np.asarray(first.temporal[...])) + 0.5 * l1)
    assert float(model.regularizer()) == pytest.approx(want, rel=1e-5)
    config.core.gamma_input_spatial = config.core.gamma_input_temporal = config.readout.gamma_readout = 0.0
    assert float(build_model(config, card, nnx.Rngs(0)).regularizer()) == 0.0


def loss_and_grads(config: ml_collections.ConfigDict, card, batch, scale):
    """(loss, metrics, its gradient, the gradient of the model's penalty alone) at init."""
    model = build_model(config, card, nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def objective(p):
        return model_loss(nnx.merge(graphdef, p, rest, copy=True), batch, get_loss("poisson"), scale)

    (loss, metrics), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
    penalty_grads = jax.jit(jax.grad(lambda p: nnx.merge(graphdef, p, rest, copy=True).regularizer()))(params)
    return loss, metrics, grads, penalty_grads


@pytest.mark.parametrize("scale_name", ["mean", "reference"])
def test_the_penalty_enters_the_loss_and_its_gradient(scale_name):
    card = make_card()
    batch = make_batch(card, [0, 1, 1])
    scale = loss_scale(scale_name, [40, 25])
    on = tiny_config(gamma_input_spatial=10.0, gamma_input_temporal=0.01)
    on.readout.gamma_readout = 0.1
    off = tiny_config(gamma_input_spatial=0.0, gamma_input_temporal=0.0)
    loss_on, metrics_on, grads_on, penalty_grads = loss_and_grads(on, card, batch, scale)
    loss_off, metrics_off, grads_off, _ = loss_and_grads(off, card, batch, scale)
    model = build_model(on, card, nnx.Rngs(0))
    penalty = float(model.regularizer())
    entries = float(np.sum(batch["neuron_mask"]) * model.frames_out(batch["video"].shape[1]))
    divisor = entries if scale_name == "mean" else 1.0
    assert float(metrics_on["loss"]) == pytest.approx(float(metrics_off["loss"]), rel=1e-6)
    assert float(metrics_on["regularizer"]) == pytest.approx(penalty / divisor, rel=1e-5)
    assert float(metrics_off["regularizer"]) == 0.0
    assert float(loss_on - loss_off) == pytest.approx(penalty / divisor, rel=1e-4)
    want = jax.tree.map(lambda g_off, g_pen: g_off + g_pen / divisor, grads_off, penalty_grads)
    for got, expected in zip(jax.tree.leaves(grads_on), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-6)
    spatial_grad = penalty_grads["core"]["layers"][0]["spatial"][...]
    assert float(jnp.abs(spatial_grad).max()) > 0  # the penalty reaches the first filters


def test_reference_loss_scale_equals_numpy_sum_times_sqrt():
    rng = np.random.default_rng(3)
    b, t, n = 5, 4, 6
    mouse = np.array([0, 1, 1, 0, 1], np.int32)
    predictions = rng.uniform(0.2, 3.0, (b, t, n)).astype(np.float32)
    responses = rng.poisson(1.0, (b, t, n)).astype(np.float32)
    neuron_mask = np.ones((b, n), bool)
    neuron_mask[mouse == 0, 4:] = False  # mouse 0 has 4 neurons
    frame_mask = np.ones((b, t), bool)
    frame_mask[2, -1] = False
    trials = [100.0, 37.0]
    data, normaliser = scaled_loss(poisson_loss, predictions, responses, neuron_mask, frame_mask, mouse,
                                   loss_scale("reference", trials))
    per_entry = predictions - responses * np.log(predictions + 1e-8)
    valid = frame_mask[:, :, None] & neuron_mask[:, None, :]
    clips = np.bincount(mouse, minlength=2)
    want = sum(math.sqrt(trials[m] / clips[m]) * per_entry[i][valid[i]].sum() for i, m in enumerate(mouse))
    assert float(data) == pytest.approx(want, rel=1e-5)
    assert float(normaliser) == 1.0
    mean, entries = scaled_loss(poisson_loss, predictions, responses, neuron_mask, frame_mask, mouse,
                                loss_scale("mean"))
    assert float(mean) == pytest.approx(per_entry[valid].mean(), rel=1e-5)
    assert float(entries) == valid.sum()


def test_train_step_reports_data_loss_and_regularizer():
    card = make_card()
    config = tiny_config(gamma_input_spatial=10.0, gamma_input_temporal=0.01)
    model = build_model(config, card, nnx.Rngs(0))
    penalty = float(model.regularizer())
    mesh = make_data_mesh()
    tx = optax.adam(1e-3)
    graphdef, state = create_train_state(model, tx)
    state = replicate(state, mesh)
    scale = loss_scale("reference", [40, 25])
    step = make_train_step(graphdef, tx, get_loss("poisson"), mesh, loss_scale=scale)
    batch = {k: jnp.asarray(v) for k, v in make_batch(card, [0, 1]).items()}
    _, metrics = step(state, batch)
    assert set(metrics) >= {"loss", "regularizer"}
    assert float(metrics["regularizer"]) == pytest.approx(penalty, rel=1e-5)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0


def test_xavier_normal_matches_torch_fans():
    shape = (1, 11, 11, 8, 16)  # DHWIO; torch's layout is (16, 8, 1, 11, 11)
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(16, 8, 1, 11, 11))
    want_std = math.sqrt(2.0 / (fan_in + fan_out))
    draw = np.asarray(xavier_normal()(jax.random.key(0), shape))
    assert draw.std() == pytest.approx(want_std, rel=0.03)
    assert abs(draw.mean()) < 0.05 * want_std


def test_batchnorm_momentum_is_the_references_in_flax_convention():
    config = tiny_config()
    assert config.core.bn_momentum == pytest.approx(1 - 0.7)
    model = build_model(config, make_card(), nnx.Rngs(0))
    norm = model.core.layers[0].norm
    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 1.0, (4, 3, 5, 5, norm.mean.shape[0])), jnp.float32)
    before = np.asarray(norm.mean[...])
    norm(x, use_running_average=False)
    batch_mean = np.asarray(x).reshape(-1, x.shape[-1]).mean(axis=0)
    # torch's momentum 0.7: running = 0.3 * running + 0.7 * batch statistic
    np.testing.assert_allclose(np.asarray(norm.mean[...]), 0.3 * before + 0.7 * batch_mean, rtol=1e-5)


def test_a_config_saved_before_the_penalties_trains_as_before():
    card = make_card()
    current = tiny_config()
    old = current.to_dict()
    for key in ("conv_init", "gamma_input_spatial", "gamma_input_temporal"):
        del old["core"][key]
    del old["readout"]["gamma_readout"]
    old["core"]["bn_momentum"] = 0.9
    old_model = build_model(ml_collections.ConfigDict(old), card, nnx.Rngs(0))
    assert float(old_model.regularizer()) == 0.0
    assert old_model.core.layers[0].norm.momentum == 0.9
    as_before = tiny_config(conv_init="lecun_normal", bn_momentum=0.9, gamma_input_spatial=0.0,
                            gamma_input_temporal=0.0)
    same = build_model(as_before, card, nnx.Rngs(0))
    for a, b in zip(jax.tree.leaves(nnx.state(old_model, nnx.Param)), jax.tree.leaves(nnx.state(same, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_loss_scale_is_validated():
    config = base_config()
    assert config.train.loss_scale == "mean"
    assert not train_problems(config)
    config.train.loss_scale = "reference"
    assert not train_problems(config)
    config.train.loss_scale = "summed"
    assert any("train.loss_scale" in p for p in train_problems(config))
    assert default_model_config("factorized").core.gamma_input_spatial == 10.0


def test_an_ensembles_penalty_is_the_sum_of_its_members():
    config = default_model_config("ensemble")
    config.members = 2
    config.member = tiny_config(gamma_input_spatial=10.0, gamma_input_temporal=0.01)
    ensemble = build_model(config, make_card(), nnx.Rngs(0))
    first = ensemble.members.core.layers[0]
    spatial, temporal = np.asarray(first.spatial[...]), np.asarray(first.temporal[...])  # [members, ...]
    want = sum(10.0 * numpy_spatial_penalty(spatial[e]) + 0.01 * numpy_temporal_penalty(temporal[e])
               for e in range(2))
    assert float(ensemble.regularizer()) == pytest.approx(want, rel=1e-5)


def test_the_training_log_has_the_regularizer(smoke_config, tmp_path):
    from sensorium_jax.training.logging_utils import read_metrics
    from sensorium_jax.training.loop import train_and_evaluate

    smoke_config.train.steps = smoke_config.train.eval_every = 2
    smoke_config.train.log_every = 1
    smoke_config.schedule.name = "constant"
    train_and_evaluate(smoke_config, tmp_path)
    records = read_metrics(tmp_path, "train")
    assert records and all(r["regularizer"] > 0 and np.isfinite(r["loss"]) for r in records)
