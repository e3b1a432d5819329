"""The GRU baseline: shapes, causality, a learning train step, the registry, both cores."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from test_models import STEPS, driven_batch, held_out_correlation, make_batch, make_card

from sensorium_jax.models import (
    align_targets,
    build_model,
    default_model_config,
    poisson_loss,
    registered_models,
)
from sensorium_jax.models.gru import FrameCore, GRUModel
from sensorium_jax.models.gru import default_config as gru_config
from sensorium_jax.models.kernels import conv2d, recurrent_conv
from sensorium_jax.models.rotation_equivariant import RotationEquivariantCore

T = 6


def tiny_plain_config():
    cfg = tiny_gru_config()
    cfg.core.type = "plain"
    cfg.core.channels = (4, 4)
    return cfg


def tiny_gru_config():
    """The rotation-equivariant core with 4 channels x 8 rotations (10 x 12 frames give 8 x 10
    maps: the unpadded 3x3 input kernel) and an ELU after its last layer too, which the
    reference leaves out: measured in the learning test below (40 steps), held-out correlation
    0.66 with it, 0.47 without (0.74 for the plain core)."""
    cfg = gru_config()
    cfg.core.channels = (4, 4)
    cfg.core.final_nonlinearity = True
    cfg.core.input_kernel = 3
    cfg.core.hidden_kernel = 3
    cfg.gru.channels = 4
    cfg.gru.input_kernel = 3
    cfg.gru.recurrent_kernel = 3
    cfg.inputs.pupil_center = True
    return cfg


@functools.partial(jax.jit, static_argnames=("graphdef", "train"))
def forward(graphdef, state, batch, train):
    model = nnx.merge(graphdef, state, copy=True)
    return model(batch, train=train)


@pytest.fixture(scope="module")
def card():
    return make_card()  # two mice, 5 and 9 neurons


@pytest.fixture(scope="module")
def split_model(card):
    return nnx.split(build_model(tiny_gru_config(), card, nnx.Rngs(jax.random.key(0, impl="rbg"))))


def test_shape_positivity_and_frames(split_model, card):
    graphdef, state = split_model
    model = nnx.merge(graphdef, state, copy=True)
    assert isinstance(model, GRUModel)
    assert model.frames_lost() == 0 and model.frames_out(T) == T
    batch = make_batch(card, [0, 1, 1], frames=T)
    for train in (False, True):
        pred = forward(graphdef, state, batch, train)
        assert pred.shape == (3, T, card.max_neurons) and pred.dtype == jnp.float32
        assert bool(jnp.all(pred > 0)) and bool(jnp.all(jnp.isfinite(pred)))


def assert_causal(predict, batch, t):
    """Changing every input from frame t on leaves frames < t unchanged and changes frame t."""
    changed = dict(batch)
    rng = np.random.default_rng(7)
    for key in ("video", "behavior", "pupil_center"):
        x = np.array(batch[key])
        x[:, t:] = rng.normal(size=x[:, t:].shape)
        changed[key] = x
    before, after = np.asarray(predict(batch)), np.asarray(predict(changed))
    np.testing.assert_allclose(after[:, :t], before[:, :t], rtol=1e-6, atol=1e-6)
    assert np.abs(after[:, t] - before[:, t]).max() > 1e-4  # the change does reach frame t


def test_causal(split_model, card):
    graphdef, state = split_model
    batch = make_batch(card, [0, 1], frames=T)

    def predict(b):
        return forward(graphdef, state, b, False)

    for t in (1, T // 2, T - 1):
        assert_causal(predict, batch, t)

    # The check is real: the same model run backwards in time (anti-causal) fails it.
    def backwards(b):
        flipped = {k: (v[:, ::-1] if k in ("video", "behavior", "pupil_center") else v) for k, v in b.items()}
        return np.asarray(predict(flipped))[:, ::-1]

    with pytest.raises(AssertionError):
        assert_causal(backwards, batch, T // 2)


@pytest.mark.parametrize("kernel", [3, 4])
def test_patches_convolution_equals_native(kernel):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        jax.jit(recurrent_conv, static_argnums=2)(x, w, "folded"), jax.jit(conv2d)(x, w), rtol=1e-5, atol=1e-5
    )


def test_model_same_for_both_recurrent_convolutions(split_model, card):
    graphdef, state = split_model
    batch = make_batch(card, [0, 1], frames=T)
    outputs = []
    for impl in ("native", "folded"):
        model = nnx.merge(graphdef, state, copy=True)
        model.gru.kernels = impl
        outputs.append(forward(*nnx.split(model), batch, False))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_jitted_train_step_learns_from_the_video(split_model, card):
    """Every GRU kernel gets a gradient, and the model learns the video's drive of the responses
    on held-out batches, which the same training on mismatched video cannot (see
    `test_models.driven_batch`)."""
    graphdef, params, rest = nnx.split(nnx.merge(*split_model, copy=True), nnx.Param, ...)
    tx = optax.adamw(1e-2)
    opt_state = tx.init(params)

    def objective(params, rest, batch):
        model = nnx.merge(graphdef, params, rest, copy=True)
        pred = model(batch, train=True)
        loss = poisson_loss(pred, *align_targets(batch, pred.shape[1]))
        return loss, nnx.split(model, nnx.Param, ...)[2]

    @jax.jit
    def step(params, rest, opt_state, batch):
        (loss, rest), grads = jax.value_and_grad(objective, has_aux=True)(params, rest, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss, grads

    @jax.jit
    def predict(params, rest, batch):
        return nnx.merge(graphdef, params, rest, copy=True)(batch, train=False)

    def train(broken: bool):
        p, r, o = params, rest, opt_state
        for i in range(STEPS):
            p, r, o, loss, grads = step(p, r, o, driven_batch(card, [0, 1, 1], T, seed=i, broken=broken))
            assert np.isfinite(float(loss))
            if i == 1 and not broken:  # the GRU's kernels all get gradients
                gru_grads = nnx.to_pure_dict(grads)["gru"]
                assert set(gru_grads) == {"input_kernel", "bias", "gate_kernel", "candidate_kernel"}
                for name, g in gru_grads.items():
                    assert float(jnp.abs(g).sum()) > 0, name
                for layer in nnx.to_pure_dict(grads)["core"]["features"].values():
                    assert float(jnp.abs(layer["hermite_conv"]["coeffs"]).sum()) > 0
        return p, r

    untrained = held_out_correlation(lambda b: predict(params, rest, b), card, T)
    trained_state = train(broken=False)
    trained = held_out_correlation(lambda b: predict(*trained_state, b), card, T)
    broken_state = train(broken=True)
    broken = held_out_correlation(lambda b: predict(*broken_state, b), card, T)
    print("held-out correlation: untrained, trained, broken", untrained, trained, broken)
    # Measured (32 held-out batches), tiny rotation-equivariant config: untrained -0.14, trained
    # 0.66, broken (video of another clip) 0.11. The plain core: 0.09, 0.74, -0.03, and trained
    # 0.01 with the video zeroed inside the model (core_input).
    assert trained > untrained + 0.4 and trained > broken + 0.4, (untrained, trained, broken)
    assert broken < untrained + 0.4  # the bar is out of reach without the video
    assert step._cache_size() == 1


def test_build_by_name(card):
    assert "gru" in registered_models()
    cfg = default_model_config("gru")
    assert cfg.name == "gru" and cfg.core.type == "rotation_equivariant"
    assert tuple(cfg.core.channels) == (8, 8, 8, 8) and cfg.core.rotations == 8
    assert cfg.core.input_kernel == 9 and cfg.core.hidden_kernel == 7 and cfg.core.input_padding == "VALID"
    assert cfg.gru.channels == 64 and cfg.gru.input_kernel == 9 and cfg.gru.recurrent_kernel == 9
    small = tiny_gru_config()
    small.name = "gru"
    assert isinstance(build_model(small, card, nnx.Rngs(0)), GRUModel)
    # The competition-scale model builds (abstractly: no arrays, no compile): 64 core maps.
    abstract = nnx.eval_shape(lambda: build_model(cfg, card, nnx.Rngs(0)))
    assert isinstance(abstract.core, RotationEquivariantCore) and abstract.core.out_channels == 64
    assert abstract.gru.input_kernel.shape == (9, 9, 64, 192)
    assert abstract.gru.gate_kernel.shape == (9, 9, 64, 128)
    assert abstract.readout.features.shape == (2, 9, 64)


def test_plain_core_still_builds_and_runs(card):
    cfg = tiny_plain_config()
    model = build_model(cfg, card, nnx.Rngs(0))
    assert isinstance(model.core, FrameCore) and model.core.out_channels == 4
    pred = forward(*nnx.split(model), make_batch(card, [0, 1], frames=T), False)
    assert pred.shape == (2, T, card.max_neurons) and bool(jnp.all(pred > 0))
    assert float(model.regularizer()) == 0.0  # gamma_readout 0, the plain core has no penalty
    cfg.core.type = "hexagonal"
    with pytest.raises(ValueError, match="core.type"):
        build_model(cfg, card, nnx.Rngs(0))


def test_config_saved_before_core_type_builds_the_plain_core(card):
    """A config from before `core.type` (the plain core, 64-channel layout) loads into the
    same model: same parameters, same predictions."""
    current = tiny_plain_config()
    old = current.to_dict()
    for key in ("type", "rotations", "upsampling", "init_std", "input_padding", "final_nonlinearity",
                "gamma_input", "gamma_hidden"):
        del old["core"][key]
    del old["readout"]["gamma_readout"]
    batch = make_batch(card, [0, 1], frames=T)
    outputs = []
    for config in (current, ml_collections.ConfigDict(old)):
        model = build_model(config, card, nnx.Rngs(0))
        assert isinstance(model.core, FrameCore)
        shapes = jax.tree.map(lambda a: a.shape, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
        outputs.append((shapes, np.asarray(forward(*nnx.split(model), batch, False))))
    assert outputs[0][0] == outputs[1][0]
    np.testing.assert_allclose(outputs[0][1], outputs[1][1], rtol=1e-6)


def test_regularizer_is_the_cores_plus_the_readouts(split_model, card):
    model = nnx.merge(*split_model, copy=True)
    model.readout.gamma_readout = 0.5
    core, readout = float(model.core.regularizer()), float(model.readout.regularizer())
    assert core > 0 and readout > 0
    np.testing.assert_allclose(float(model.regularizer()), core + readout, rtol=1e-6)
