"""CutMix inside the step: partners of the same mouse, boxes (on the model's padded canvas),
targets mixed by area, the partner's behaviour and pupil handed to the model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sensorium_jax.training.augment import CUTMIX_BOX, crop_centred, cutmix, cutmix_boxes, draw_partners


def make_batch(mice, frames=5, height=12, width=16, neurons=6, seed=0):
    rng = np.random.default_rng(seed)
    b = len(mice)
    return {
        "video": jnp.asarray(rng.normal(size=(b, frames, height, width, 1)), jnp.float32),
        "behavior": jnp.asarray(rng.normal(size=(b, frames, 2)), jnp.float32),
        "pupil_center": jnp.asarray(rng.normal(size=(b, frames, 2)), jnp.float32),
        "responses": jnp.asarray(rng.uniform(0, 3, size=(b, frames, neurons)), jnp.float32),
        "neuron_mask": jnp.ones((b, neurons), bool),
        "frame_mask": jnp.ones((b, frames), bool),
        "mouse": jnp.asarray(mice, jnp.int32),
    }


def test_partners_are_other_clips_of_the_same_mouse():
    mouse = jnp.asarray([0, 1, 0, 2, 1, 0], jnp.int32)
    for seed in range(20):
        partner, has = draw_partners(jax.random.key(seed), mouse)
        partner, has = np.asarray(partner), np.asarray(has)
        np.testing.assert_array_equal(has, [True, True, True, False, True, True])
        for i in np.flatnonzero(has):
            assert partner[i] != i and mouse[partner[i]] == mouse[i]


def test_boxes_cover_about_one_minus_lambda_on_average():
    boxes = cutmix_boxes(jax.random.key(0), 4000, 36, 64, alpha=1.0)
    # lambda ~ U(0, 1): the unclipped box covers 1 - lambda (mean 1/2); clipping at the edges
    # removes some area, so the mean is below 1/2 but far from 0.
    area = float(jnp.mean(boxes))
    assert 0.2 < area < 0.5


def test_cutmix_pastes_partner_pixels_and_mixes_targets_by_area():
    batch = make_batch([0, 0, 1, 1, 2])
    key = jax.random.key(3)
    mixed = cutmix(batch, key, probability=1.0, alpha=1.0)
    k_partner, _, k_box = jax.random.split(key, 3)
    partner, has = draw_partners(k_partner, batch["mouse"])
    boxes = np.asarray(cutmix_boxes(k_box, 5, 12, 16, 1.0)) & np.asarray(has)[:, None, None]
    video, out = np.asarray(batch["video"]), np.asarray(mixed["video"])
    for i in range(5):
        inside = boxes[i]
        np.testing.assert_array_equal(out[i][:, inside], video[int(partner[i])][:, inside])
        np.testing.assert_array_equal(out[i][:, ~inside], video[i][:, ~inside])
        area = inside.mean()
        expected = (1 - area) * np.asarray(batch["responses"][i]) + area * np.asarray(batch["responses"][int(partner[i])])
        np.testing.assert_allclose(np.asarray(mixed["responses"][i]), expected, rtol=1e-6, atol=1e-6)
    # the clip of mouse 2 has no partner and is untouched; behaviour stays one number per frame
    # (the partner's values travel beside it, for models that paste maps)
    np.testing.assert_array_equal(out[4], video[4])
    np.testing.assert_array_equal(np.asarray(mixed["behavior"]), np.asarray(batch["behavior"]))
    np.testing.assert_array_equal(np.asarray(mixed[CUTMIX_BOX]), boxes)
    assert boxes[:4].any(), "with probability 1 some clip must be mixed"


def test_probability_zero_is_the_identity():
    batch = make_batch([0, 0, 1, 1])
    mixed = cutmix(batch, jax.random.key(0), probability=0.0, alpha=1.0)
    for key in batch:
        np.testing.assert_array_equal(np.asarray(mixed[key]), np.asarray(batch[key]))


def test_cutmix_jits():
    batch = make_batch([0, 0, 1, 1])
    run = jax.jit(lambda b, k: cutmix(b, k, probability=0.5, alpha=1.0))
    out = run(batch, jax.random.key(1))
    assert out["video"].shape == batch["video"].shape


def test_box_drawn_on_the_padded_canvas():
    """As the reference: the box lives on the model's padded frame (canvas); the video, centred
    in it, takes the box's part over its pixels; targets mix by the box's share of the canvas."""
    batch = make_batch([0, 0, 0, 1, 1], height=12, width=16)
    key = jax.random.key(7)
    mixed = cutmix(batch, key, probability=1.0, alpha=1.0, canvas=(20, 22))
    k_partner, _, k_box = jax.random.split(key, 3)
    partner, has = (np.asarray(a) for a in draw_partners(k_partner, batch["mouse"]))
    boxes = np.asarray(cutmix_boxes(k_box, 5, 20, 22, 1.0)) & has[:, None, None]
    np.testing.assert_array_equal(np.asarray(mixed[CUTMIX_BOX]), boxes)
    video = np.asarray(batch["video"])
    for i in range(5):
        inside = boxes[i, 4:16, 3:19]  # the 12 x 16 frame sits at rows 4.., columns 3.. of 20 x 22
        expected = np.where(inside[None, :, :, None], video[partner[i]], video[i])
        np.testing.assert_array_equal(np.asarray(mixed["video"][i]), expected)
        area = boxes[i].mean()
        want = (1 - area) * np.asarray(batch["responses"][i]) + area * np.asarray(batch["responses"][partner[i]])
        np.testing.assert_allclose(np.asarray(mixed["responses"][i]), want, rtol=1e-6, atol=1e-6)
    for key_name in ("behavior", "pupil_center"):
        np.testing.assert_array_equal(np.asarray(mixed[f"{key_name}_partner"]),
                                      np.asarray(batch[key_name])[partner])
    np.testing.assert_array_equal(np.asarray(crop_centred(jnp.asarray(boxes), 12, 16)), boxes[:, 4:16, 3:19])
    with pytest.raises(ValueError, match="canvas"):
        cutmix(batch, key, probability=1.0, alpha=1.0, canvas=(10, 22))


def test_the_trainer_draws_cutmix_boxes_on_the_models_padded_canvas():
    from flax import nnx

    from sensorium_jax.config import load_config
    from sensorium_jax.data.datasets import open_training_store
    from sensorium_jax.models import build_model
    from sensorium_jax.training.loop import make_augment

    config = load_config("configs/dwiseneuro.py", "smoke")
    card = open_training_store(config.data).card()
    model = nnx.eval_shape(lambda: build_model(config.model, card, nnx.Rngs(0)))
    assert model.input_canvas == tuple(config.model.frame_size) != tuple(card.frame_shape)
    config.train.cutmix.probability = 0.5
    augment = make_augment(config.train, model.input_canvas)
    assert augment.keywords["canvas"] == tuple(config.model.frame_size)
