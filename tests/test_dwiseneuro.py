"""DwiseNeuro: shapes, fixed clip length, randomness, the all-mice readout, shortcut, training."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sensorium_jax.models import (
    align_targets,
    build_model,
    count_parameters,
    default_model_config,
    get_loss,
)
from sensorium_jax.models.dwiseneuro import DwiseNeuroModel
from sensorium_jax.models.dwiseneuro import default_config as dwiseneuro_config
from sensorium_jax.models.dwiseneuro_blocks import channel_shuffle, positional_encoding_3d, shortcut
from sensorium_jax.models.dwiseneuro_heads import inverse_softplus_beta, readout_layout, softplus_beta
from test_models import STEPS, driven_batch, held_out_correlation, make_batch, make_card

CLIP, H, W = 8, 12, 16


def tiny_config():
    cfg = dwiseneuro_config()
    cfg.clip_length = CLIP
    cfg.temporal_stride = 2
    cfg.frame_size = (16, 16)
    cfg.stem.channels = 4
    cfg.blocks.channels = (4, 8, 8)
    cfg.blocks.spatial_strides = (2, 1, 2)
    cfg.blocks.expansion_ratio = 2
    cfg.blocks.se_reduce_ratio = 4
    cfg.cortex.channels = (16, 32)
    cfg.drop_path_rate = 0.2
    return cfg


@pytest.fixture(scope="module")
def card():
    return make_card(n_neurons=(5, 9), frame_shape=(H, W))


@pytest.fixture(scope="module")
def split_model(card):
    model = build_model(tiny_config(), card, nnx.Rngs(jax.random.key(0, impl="rbg")))
    return nnx.split(model, nnx.Param, ...)


@functools.partial(jax.jit, static_argnames=("graphdef", "train"))
def forward(graphdef, params, rest, batch, train):
    model = nnx.merge(graphdef, params, rest, copy=True)
    return model(batch, train=train), nnx.split(model, nnx.Param, ...)[2]


def test_shape_positive_and_frames(split_model, card):
    graphdef, params, rest = split_model
    model = nnx.merge(graphdef, params, rest, copy=True)
    assert isinstance(model, DwiseNeuroModel) and model.clip_length == CLIP
    assert model.frames_lost() == 0 and model.frames_out(CLIP) == CLIP
    pred, _ = forward(graphdef, params, rest, make_batch(card, [0, 1, 1], frames=CLIP), False)
    check_predictions(pred, card)  # train mode: in the train step test (one compile less)


def check_predictions(pred, card):
    assert pred.shape == (3, CLIP, card.max_neurons) and pred.dtype == jnp.float32
    assert bool(jnp.all(pred > 0)) and bool(jnp.all(jnp.isfinite(pred)))
    # each processed step covers `temporal_stride` frames
    np.testing.assert_array_equal(pred[:, 0::2], pred[:, 1::2])


def test_wrong_clip_length_raises(split_model, card):
    model = nnx.merge(*split_model, copy=True)
    with pytest.raises(ValueError, match=f"exactly {CLIP} frames"):
        model(make_batch(card, [0], frames=CLIP + 2), train=False)


def test_eval_deterministic(split_model, card):
    """(Train mode is stochastic: see the train step test.)"""
    graphdef, params, rest = split_model
    batch = make_batch(card, [0, 1, 1], frames=CLIP)
    a, rest_a = forward(graphdef, params, rest, batch, False)
    b, _ = forward(graphdef, params, rest_a, batch, False)
    np.testing.assert_array_equal(a, b)


def test_initial_rate_near_mean_response(split_model, card):
    graphdef, params, rest = split_model
    pred, _ = forward(graphdef, params, rest, make_batch(card, [1, 0, 0], frames=CLIP), False)
    for row, mouse in ((0, card.mice[1]), (1, card.mice[0])):
        got = np.asarray(pred[row, :, : mouse.n_neurons]).mean(axis=0)
        np.testing.assert_allclose(got, mouse.mean_response, rtol=0.3, atol=0.05)
    r = np.array([1e-3, 0.5, 3.0, 40.0], np.float32)
    np.testing.assert_allclose(softplus_beta(jnp.asarray(inverse_softplus_beta(r, 0.07)), 0.07), r, rtol=1e-4)


def test_all_mice_readout_equals_per_sample(split_model, card):
    model = nnx.merge(*split_model, copy=True)
    ro = model.readout
    rng = np.random.default_rng(0)
    ro.bias[...] = jnp.asarray(rng.normal(size=ro.bias.shape), jnp.float32)
    features = rng.normal(size=(3, 4, 32)).astype(np.float32)
    mouse = np.array([1, 0, 1], np.int32)
    got = np.asarray(jax.jit(lambda f, m: ro(f, m, train=False))(features, mouse))
    kernel, bias = np.asarray(ro.kernel[...]), np.asarray(ro.bias[...])  # [M, 2, 16, G], [M, 2G]
    g_width = kernel.shape[-1]
    for b, m in enumerate(mouse):
        n_neurons = card.mice[m].n_neurons
        half = -(-n_neurons // 2)
        for n in range(n_neurons):  # first half of the neurons read the first 16 channels
            group, j = divmod(n, half)
            pre = features[b, :, 16 * group : 16 * (group + 1)] @ kernel[m, group, :, j] + bias[m, group * g_width + j]
            np.testing.assert_allclose(got[b, :, n], np.log1p(np.exp(0.07 * pre)) / 0.07, rtol=1e-5, atol=1e-5)
    slot, _ = readout_layout(card, 2)
    assert all(len(set(row)) == len(row) for row in slot)  # padded neurons take unused slots


def test_parameter_free_shortcut_and_shuffle():
    x = jnp.arange(2 * 3 * 4 * 6 * 2, dtype=jnp.float32).reshape(2, 3, 4, 6, 2)
    np.testing.assert_array_equal(shortcut(x, 2, 1), x)
    # the defaults: nearest interpolation (top-left pixel of each 2x2), channels tiled
    y = shortcut(x, 4, 2)
    assert y.shape == (2, 3, 2, 3, 4)
    np.testing.assert_array_equal(y, np.concatenate([np.asarray(x)[:, :, ::2, ::2]] * 2, axis=-1))
    # the alternative: average pooling, each channel twice in a row
    y = shortcut(x, 4, 2, "average", "interleave")
    pooled = np.asarray(x).reshape(2, 3, 2, 2, 3, 2, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(y[..., 0::2], pooled)
    np.testing.assert_allclose(y[..., 1::2], pooled)
    for mode in ("nearest", "average"):  # ceil(5 / 2), as the strided convolution
        odd = shortcut(jnp.arange(25.0).reshape(1, 1, 5, 5, 1), 1, 2, mode)
        assert odd.shape == (1, 1, 3, 3, 1)
    np.testing.assert_array_equal(shortcut(jnp.arange(25.0).reshape(1, 1, 5, 5, 1), 1, 2)[0, 0, :, 0, 0],
                                  [0, 5, 15])  # floor(i * 5 / 3) = 0, 1, 3
    with pytest.raises(ValueError):
        shortcut(x, 3, 1)
    np.testing.assert_array_equal(channel_shuffle(jnp.arange(6.0), 2), [0, 3, 1, 4, 2, 5])
    pe = positional_encoding_3d(4, 5, 6, 10)  # 4 channels per axis: sin f0, sin f1, cos f0, cos f1
    assert pe.shape == (4, 5, 6, 10) and np.abs(pe).max() <= 1
    np.testing.assert_allclose(pe[0, 0, 0], [0, 0, 1, 1] * 2 + [0, 0])
    np.testing.assert_allclose(pe[1, 0, 0, :4], [np.sin(1), np.sin(0.01), np.cos(1), np.cos(0.01)], rtol=1e-6)
    np.testing.assert_allclose(pe[0, 0, 2, 8:], [np.sin(2), np.sin(0.02)], rtol=1e-6)


def test_jitted_train_step_learns_from_the_video_and_advances_rng(split_model, card):
    """Train mode draws new masks each step; the model learns the video's drive of the responses
    on held-out batches, which the same training on mismatched video cannot (see
    `test_models.driven_batch`: the flicker holds for two frames, the temporal stride)."""
    graphdef, params, rest = split_model
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    loss_fn = get_loss("poisson")
    # Cheaper XLA optimization: the compile is most of this test's time (20 s -> 13 s here).
    options = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

    @functools.partial(jax.jit, compiler_options=options)
    def step(params, rest, opt_state, batch):
        def objective(p):
            model = nnx.merge(graphdef, p, rest, copy=True)
            pred = model(batch, train=True)
            loss = loss_fn(pred, *align_targets(batch, pred.shape[1]))
            return loss, (nnx.split(model, nnx.Param, ...)[2], pred)

        (loss, (rest, pred)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss, grads, pred

    @functools.partial(jax.jit, compiler_options=options)
    def predict(params, rest, batch):
        return nnx.merge(graphdef, params, rest, copy=True)(batch, train=False)

    def train(broken: bool):
        p, r, o = params, rest, opt_state
        for i in range(STEPS):
            batch = driven_batch(card, [0, 1, 1], CLIP, seed=i, broken=broken)
            before = p, r, o
            p, r, o, loss, grads, pred = step(p, r, o, batch)
            assert np.isfinite(float(loss))
            if i == 0 and not broken:
                check_predictions(pred, card)
                leaves = jax.tree.leaves(grads)
                assert len(leaves) == len(jax.tree.leaves(p)) and all(bool(jnp.isfinite(g).all()) for g in leaves)
                assert any(float(jnp.abs(g).sum()) > 0 for g in leaves)
                # Train mode is stochastic and the RNG counts live in `rest`: the same step with
                # the same params but the returned `rest` draws new DropPath / dropout masks.
                again = step(before[0], r, before[2], batch)[5]
                assert not np.allclose(again, pred)
                np.testing.assert_array_equal(step(*before, batch)[5], pred)  # same rest: same masks
        return p, r

    untrained = held_out_correlation(lambda b: predict(params, rest, b), card, CLIP)
    trained_state = train(broken=False)
    trained = held_out_correlation(lambda b: predict(*trained_state, b), card, CLIP)
    broken_state = train(broken=True)
    broken = held_out_correlation(lambda b: predict(*broken_state, b), card, CLIP)
    print("held-out correlation: untrained, trained, broken", untrained, trained, broken)
    # Measured (32 held-out batches): untrained 0.00, trained 0.26, broken (video of another clip)
    # 0.08; with the video zeroed inside the model (core_input), trained 0.03.
    assert trained > untrained + 0.1 and trained > broken + 0.1, (untrained, trained, broken)
    assert broken < untrained + 0.1  # the bar is out of reach without the video
    assert step._cache_size() == 1


def test_registry_and_competition_scale(card):
    assert default_model_config("dwiseneuro").to_dict() == dwiseneuro_config().to_dict()
    big = make_card(n_neurons=(300, 250), frame_shape=(36, 64))
    cfg = default_model_config("dwiseneuro")
    cfg.compute_dtype = "bfloat16"  # convolutions and matmuls in bfloat16, params and output float32
    abstract = nnx.eval_shape(lambda: build_model(cfg, big, nnx.Rngs(0)))
    assert abstract.clip_length == 32 and count_parameters(abstract) > 0
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    graphdef, state = nnx.split(abstract)
    batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), make_batch(big, [0, 1], frames=32))
    out = jax.eval_shape(lambda s, b: nnx.merge(graphdef, s)(b, train=True), state, batch)
    assert out.shape == (2, 32, 300) and out.dtype == jnp.float32


@pytest.mark.parametrize("kernel, stride", [((1, 3, 3), 1), ((1, 3, 3), 2), ((5, 1, 1), 1)])
def test_depthwise_shifts_equal_the_grouped_convolution(kernel, stride):
    from sensorium_jax.models.dwiseneuro_blocks import DepthwiseConv

    x = jax.random.normal(jax.random.key(0), (2, 6, 7, 9, 4))
    native = DepthwiseConv(4, kernel, stride, compute_dtype=jnp.float32, kernels_impl="native", rngs=nnx.Rngs(0))
    shifts = DepthwiseConv(4, kernel, stride, compute_dtype=jnp.float32, kernels_impl="folded", rngs=nnx.Rngs(0))
    a, b = native(x), shifts(x)
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
