"""The model contract: every model implements it, readout positions come out in screen pixels,
the `kernels` forms agree, and a model written outside the package (tests/toy_model.py) trains,
benchmarks, loads and evaluates by its name alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from sensorium_jax.models import Model, build_model, default_model_config, kernels
from sensorium_jax.models.geometry import grid_to_pixels
from test_models import make_batch, make_card, tiny_config

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def tiny_gru():
    from test_gru import tiny_gru_config

    return tiny_gru_config()


def tiny_dwiseneuro():
    from test_dwiseneuro import tiny_config as dwise_config

    return dwise_config()


def ensemble_of(member, members=2):
    return ml_collections.ConfigDict({"name": "ensemble", "members": members, "member": member, "kernels": "auto"})


def spread_positions(model: nnx.Module) -> None:
    """Random last layers of the position networks, so positions leave the screen centre."""
    readout = model.members.readout if hasattr(model, "members") else model.readout
    last = readout.position_mlp.kernels[-1]
    last[...] = 3.0 * jax.random.normal(jax.random.key(1), last.shape)


# -- readout positions


def pooled_same_factorized():
    return tiny_config(input_pool=2, spatial_padding="SAME")


@pytest.mark.parametrize("make_config", [tiny_config, pooled_same_factorized, tiny_gru,
                                         lambda: ensemble_of(tiny_config())])
def test_gaussian_readout_positions_are_screen_pixels(make_config):
    card = make_card()
    model = build_model(make_config(), card, nnx.Rngs(0))
    assert isinstance(model, Model)
    spread_positions(model)
    positions = model.readout_positions()
    pixels = np.asarray(positions.pixels)
    h, w = card.frame_shape
    assert pixels.shape == (len(card.mice), card.max_neurons, 2)
    assert np.all((pixels[..., 0] >= -0.5) & (pixels[..., 0] <= w - 0.5)), pixels[..., 0]
    assert np.all((pixels[..., 1] >= -0.5) & (pixels[..., 1] <= h - 0.5)), pixels[..., 1]
    assert pixels[..., 0].std() > 0.5 and pixels[..., 1].std() > 0.5  # spread over the screen


def test_pixel_geometry_of_pooling_cropping_and_padding():
    corners = jnp.asarray([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    # VALID 3x3 twice on 10 x 12: a 6 x 8 map whose first pixel sits on screen pixel 2
    np.testing.assert_allclose(grid_to_pixels(corners, (10, 12), 1, ((3, "VALID"), (3, "VALID"))),
                               [[2, 2], [9, 7], [5.5, 4.5]])
    # pooled by 2 (5 x 6), SAME: pooled pixel j covers screen pixels 2j, 2j + 1
    np.testing.assert_allclose(grid_to_pixels(corners, (10, 12), 2, ((5, "SAME"),)),
                               [[0.5, 0.5], [10.5, 8.5], [5.5, 4.5]])
    # an even SAME kernel pads one pixel more after: the map moves half a pixel
    np.testing.assert_allclose(grid_to_pixels(corners, (10, 12), 1, ((4, "SAME"),)),
                               [[0.5, 0.5], [11.5, 9.5], [6, 5]])


def test_dwiseneuro_has_no_positions_and_says_why():
    from test_dwiseneuro import CLIP, H, W

    card = make_card(frame_shape=(H, W))
    model = build_model(tiny_dwiseneuro(), card, nnx.Rngs(0))
    positions = model.readout_positions()
    assert positions.pixels is None and "no per-neuron" in positions.reason
    assert model.clip_length == CLIP and model.frames_lost() == 0 and model.n_members == 1
    ensemble = build_model(ensemble_of(tiny_dwiseneuro()), card, nnx.Rngs(0))
    assert ensemble.clip_length == CLIP and ensemble.n_members == 2
    assert ensemble.readout_positions().pixels is None and "no per-neuron" in ensemble.readout_positions().reason


# -- kernels


def test_kernels_resolve_once_in_build_model():
    assert kernels.resolve("auto", "cpu") == "folded" and kernels.resolve("auto", "gpu") == "native"
    assert kernels.resolve("matmul", "tpu") == "matmul"
    with pytest.raises(ValueError, match="kernels"):
        kernels.resolve("3d")
    with pytest.raises(ValueError, match="resolved by build_model"):
        kernels.factorized_conv(jnp.zeros((1, 2, 3, 3, 1)), jnp.zeros((1, 3, 3, 1, 1)), "auto")
    config = tiny_config()
    assert config.kernels == "auto"
    model = build_model(config, make_card(), nnx.Rngs(0))
    expected = kernels.resolve("auto")
    assert all(layer.kernels == expected for layer in model.core.layers)
    assert config.kernels == "auto"  # the caller's config is left as it was
    ensemble = build_model(ensemble_of(tiny_config()), make_card(), nnx.Rngs(0))
    assert ensemble.kernels == expected and ensemble.members.core.layers[0].kernels == expected


@pytest.mark.parametrize("impl", ["folded", "matmul"])
def test_kernel_forms_equal_native(impl):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 7, 8, 3)).astype(np.float32)
    for shape, padding in (((1, 3, 3, 3, 4), "VALID"), ((1, 4, 4, 3, 4), "SAME"), ((3, 1, 1, 3, 4), "VALID")):
        w = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(kernels.factorized_conv(x, w, impl, padding),
                                   kernels.factorized_conv(x, w, "native", padding), rtol=1e-4, atol=1e-4)
    state = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(kernels.recurrent_conv(state, w, impl), kernels.recurrent_conv(state, w, "native"),
                               rtol=1e-4, atol=1e-4)
    for shape, stride in (((1, 3, 3, 1, 3), 2), ((5, 1, 1, 1, 3), 1), ((3, 3, 3, 1, 3), 1)):
        w = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(kernels.depthwise_conv(x, w, stride, impl),
                                   kernels.depthwise_conv(x, w, stride, "native"), rtol=1e-4, atol=1e-4)

    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def members(rngs):
        return nnx.Linear(3, 2, rngs=rngs)

    stacked = members(nnx.Rngs(0))
    inputs = {"x": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
    call = lambda member, batch: member(batch["x"])  # noqa: E731
    np.testing.assert_allclose(kernels.run_members(stacked, call, inputs, 3, impl),
                               kernels.run_members(stacked, call, inputs, 3, "native"), rtol=1e-5, atol=1e-6)


def test_model_outputs_agree_across_kernels():
    card = make_card()
    batch = make_batch(card, [0, 1], frames=6)
    outputs = []
    for impl in ("native", "folded", "matmul"):
        config = tiny_config()
        config.kernels = impl
        outputs.append(np.asarray(build_model(config, card, nnx.Rngs(0))(batch)))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs[2], outputs[0], rtol=1e-5, atol=1e-5)


# -- a model from outside the package


@pytest.fixture(scope="module")
def toy_config(tiny_store):
    import toy_config

    config = toy_config.get_config()
    config.data.store = str(tiny_store)
    return config


@pytest.fixture(scope="module")
def toy_workdir(toy_config, tmp_path_factory):
    from sensorium_jax.training.loop import train_and_evaluate

    workdir = tmp_path_factory.mktemp("toy_run")
    summary = train_and_evaluate(toy_config, workdir)
    assert summary.steps == toy_config.train.steps
    return workdir


def test_toy_model_is_found_by_name_and_trains(toy_config, toy_workdir):
    import toy_model

    from sensorium_jax.data.store import open_store
    from sensorium_jax.training.logging_utils import read_metrics

    assert toy_config.model.name == "toy_model" and default_model_config("toy_model").kernel == 5
    card = open_store(toy_config.data.store).card()
    model = build_model(toy_config.model, card, nnx.Rngs(0))
    assert isinstance(model, toy_model.ToyModel) and isinstance(model, Model)
    pixels = np.asarray(model.readout_positions().pixels)
    h, w = card.frame_shape
    assert pixels.shape == (len(card.mice), card.max_neurons, 2)
    np.testing.assert_allclose(pixels, np.broadcast_to([(w - 1) / 2, (h - 1) / 2], pixels.shape), atol=1e-4)
    losses = [r["loss"] for r in read_metrics(toy_workdir, "train")]
    assert losses and np.all(np.isfinite(losses))


def test_toy_model_benchmarks(toy_config):
    from sensorium_jax.benchmarking.measure import measure_training
    from sensorium_jax.data.store import open_store

    result = measure_training(toy_config, open_store(toy_config.data.store), steps=2, warmup=1)
    assert result["steps"] == 2 and result["step_seconds"]["median"] > 0
    assert np.isfinite(result["final_loss"]) and result["train_step_compilations"] <= 1


def test_toy_model_loads(toy_workdir, toy_config):
    import sensorium_jax
    from sensorium_jax.data.store import open_store

    predictor = sensorium_jax.load(toy_workdir)
    card = open_store(toy_config.data.store).card()
    mouse = card.mice[0]
    h, w = card.frame_shape
    rng = np.random.default_rng(0)
    out = predictor.predict(rng.uniform(0, 255, (20, h, w)), np.abs(rng.normal(size=(20, card.behavior_dim))),
                            rng.normal(size=(20, 2)), mouse.name)
    assert out.shape == (20, mouse.n_neurons) and np.all(np.isfinite(out))
    pixels = np.asarray(predictor.readout_positions().pixels)
    assert pixels.shape == (len(card.mice), card.max_neurons, 2)
    assert np.all((pixels[..., 0] >= -0.5) & (pixels[..., 0] <= w - 0.5))


def test_toy_model_evaluates(toy_workdir, tiny_store, tmp_path):
    out = tmp_path / "evaluation"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "--workdir", str(toy_workdir), "--store", str(tiny_store),
         "--out", str(out)],
        capture_output=True, text=True, timeout=900, env=env, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert -1 <= report["pooled"]["oracle"]["single_trial_correlation"] <= 1
    assert (out / "positions.png").stat().st_size > 0


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_wide_spatial_layers_as_patch_products_equal_the_convolution(padding, monkeypatch):
    """A wide spatial layer (`kernels.WIDE_SPATIAL_PATCH`) in the folded form runs as matrix
    products of patches, a few frames at a time (unpadded: 3 of the 2 x 5 frames per chunk,
    the last chunk padded; padded: one frame per chunk); values and both gradients equal the
    native 3D convolution's."""
    monkeypatch.setattr(kernels, "PATCH_CHUNK_BYTES", 3 * 4 * 6 * 5 * 5 * 32 * 4)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 5, 8, 10, 32)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(1, 5, 5, 32, 6)) / 30, jnp.float32)
    assert 5 * 5 * 32 >= kernels.WIDE_SPATIAL_PATCH

    def loss(impl):
        return lambda x, w: jnp.sum(jnp.sin(kernels.factorized_conv(x, w, impl, padding)))

    for got, want in zip(jax.value_and_grad(loss("folded"), argnums=(0, 1))(x, w),
                         jax.value_and_grad(loss("native"), argnums=(0, 1))(x, w)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
