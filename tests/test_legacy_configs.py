"""Model configs saved before `model.kernels` (and before some keys existed) still build the
same model: same parameters, same predictions."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from flax import nnx

from sensorium_jax.models import build_model, default_model_config
from test_models import make_batch, make_card


def small_factorized() -> ml_collections.ConfigDict:
    config = default_model_config("factorized")
    config.core.channels = (3, 4)
    config.core.spatial_kernels = (3, 3)
    config.core.temporal_kernels = (3, 2)
    return config


def as_saved_before_kernels(config: ml_collections.ConfigDict, **legacy) -> ml_collections.ConfigDict:
    """The config as an earlier version wrote it: backend options under their old names, the
    `kernels` key and a key added since (`readout.centered_positions`) absent."""
    old = config.to_dict()
    del old["kernels"]
    del old["readout"]["centered_positions"]
    for path, value in legacy.items():
        section, key = path.split("__") if "__" in path else (None, path)
        (old if section is None else old[section])[key] = value
    return ml_collections.ConfigDict(old)


def predictions(config: ml_collections.ConfigDict, card, batch) -> tuple[np.ndarray, list]:
    model = build_model(config, card, nnx.Rngs(0))
    shapes = [(str(p), x.shape) for p, x in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))]
    return np.asarray(model(batch, train=False)), shapes


def test_a_factorized_config_with_conv_impl_builds_the_same_model():
    card = make_card()
    batch = make_batch(card, [0, 1])
    current = small_factorized()
    current.kernels = "folded"
    want, want_shapes = predictions(current, card, batch)
    got, got_shapes = predictions(as_saved_before_kernels(small_factorized(), core__conv_impl="folded2d"), card, batch)
    assert got_shapes == want_shapes
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_an_ensemble_config_with_member_loop_builds_the_same_model():
    card = make_card()
    batch = make_batch(card, [0, 1])
    current = default_model_config("ensemble")
    current.members = 2
    current.member = small_factorized()
    want, want_shapes = predictions(current, card, batch)
    old = current.to_dict()
    del old["kernels"], old["member"]["kernels"]
    old["member_loop"] = "unroll"
    old["member"]["core"]["conv_impl"] = "auto"
    got, got_shapes = predictions(ml_collections.ConfigDict(old), card, batch)
    assert got_shapes == want_shapes
    np.testing.assert_allclose(got, want, rtol=1e-6)
