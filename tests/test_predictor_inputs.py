"""`Predictor.predict` refuses inputs it would silently mispredict, with one line each; an
ensemble refuses members trained on other mice or neurons."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

import sensorium_jax
from sensorium_jax.data.store import open_store
from sensorium_jax.errors import InputDataError
from sensorium_jax.inference import EnsemblePredictor, pipeline_inputs


@pytest.fixture(scope="module")
def card(tiny_store):
    return open_store(tiny_store).card()


def recording(card, frames: int = 20, batch: tuple[int, ...] = ()):
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 255, (*batch, frames, *card.frame_shape)).astype(np.float32),
            rng.uniform(0, 2, (*batch, frames, card.behavior_dim)).astype(np.float32),
            rng.normal(0, 1, (*batch, frames, 2)).astype(np.float32))


def refusal(card, video, behavior, pupil, mouse=None) -> str:
    with pytest.raises(InputDataError) as error:
        pipeline_inputs(card, video, behavior, pupil, card.names[0] if mouse is None else mouse)
    message = str(error.value)
    assert "\n" not in message and message.startswith("predict: ")
    return message


def test_valid_inputs_of_one_trial_or_a_batch_pass(card):
    assert pipeline_inputs(card, *recording(card), card.names[1])["mouse"].tolist() == [1]
    assert pipeline_inputs(card, *recording(card, batch=(3,)), card.names[1])["video"].shape[:2] == (3, 20)


def test_non_finite_inputs_are_refused_naming_the_input_and_the_count(card):
    video, behavior, pupil = recording(card)
    video[3, 1, 2] = video[4, 0, 0] = video[5, 0, 0] = np.nan
    assert refusal(card, video, behavior, pupil) == "predict: video: expected finite values, found 3 NaN"
    video, behavior, pupil = recording(card)
    pupil[0, 1] = np.inf
    assert refusal(card, video, behavior, pupil) == "predict: pupil_center: expected finite values, found 1 inf"


def test_a_video_of_the_wrong_rank_or_frame_says_what_is_expected(card):
    h, w = card.frame_shape
    video, behavior, pupil = recording(card)
    message = refusal(card, video[0], behavior, pupil)  # a 2-D video
    assert f"[T, H, W] or [B, T, H, W] with H, W = {h}, {w}" in message and f"found shape {(h, w)}" in message
    message = refusal(card, video[:, :, :-1], behavior, pupil)
    assert f"H, W = {h}, {w}" in message and f"found shape (20, {h}, {w - 1})" in message


def test_mismatched_time_lengths_and_batch_sizes_are_named(card):
    video, behavior, pupil = recording(card)
    assert refusal(card, video, behavior[:-1], pupil) == \
        "predict: behavior: expected 20 frames (the video's), found 19 frames"
    assert refusal(card, video, behavior, pupil[:-2]) == \
        "predict: pupil_center: expected 20 frames (the video's), found 18 frames"
    video, behavior, pupil = recording(card, batch=(2,))
    assert refusal(card, video, behavior[:1], pupil) == \
        "predict: behavior: expected 2 trials (the video's), found 1 trials"
    assert "[B, T, 2]" in refusal(card, video, behavior, pupil[0])


def test_an_unknown_mouse_lists_the_known_ones(card):
    message = refusal(card, *recording(card), mouse="nobody")
    assert "'nobody'" in message and all(name in message for name in card.names)
    assert "0..1" in refusal(card, *recording(card), mouse=7)


def test_predict_refuses_a_nan_pixel_and_gathers_requested_unit_ids(trained_smoke_workdir):
    model = sensorium_jax.load(trained_smoke_workdir)
    mouse = model.mice[1]
    video, behavior, pupil = recording(model.card, frames=model.frames_lost + 4)
    predicted = model.predict(video, behavior, pupil, mouse)
    assert np.isfinite(predicted).all()
    ids = model.neuron_ids(mouse)
    np.testing.assert_array_equal(model.predict(video, behavior, pupil, mouse, unit_ids=ids[[5, 0, 2]]),
                                  predicted[:, [5, 0, 2]])
    with pytest.raises(InputDataError, match="1 of 1 unit ids unknown"):
        model.predict(video, behavior, pupil, mouse, unit_ids=[-1])
    video[2, 0, 0] = np.nan
    with pytest.raises(InputDataError, match="^predict: video: expected finite values, found 1 NaN$"):
        model.predict(video, behavior, pupil, mouse)
    with pytest.raises(InputDataError, match="known|model's mice"):
        model.predict(video, behavior, pupil, "nobody")


def test_an_ensemble_refuses_members_of_other_mice_or_neurons(card):
    first = SimpleNamespace(card=card, source="runs/a", config=None)
    other_mice = dataclasses.replace(card, mice=card.mice[::-1])
    with pytest.raises(InputDataError, match=r"^runs/b: dataset_card: expected the mice and neurons of runs/a, "
                                             r"found mice .* instead of"):
        EnsemblePredictor([first, SimpleNamespace(card=other_mice, source="runs/b", config=None)])
    mouse = card.mice[1]
    shuffled = dataclasses.replace(mouse, unit_ids=mouse.unit_ids[::-1].copy())
    other_neurons = dataclasses.replace(card, mice=(card.mice[0], shuffled))
    with pytest.raises(InputDataError, match=f"other unit ids for mouse {mouse.name}"):
        EnsemblePredictor([first, SimpleNamespace(card=other_neurons, source="runs/c", config=None)])
    assert EnsemblePredictor([first, SimpleNamespace(card=card, source="runs/d", config=None)]).card is card
