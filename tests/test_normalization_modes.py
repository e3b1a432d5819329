"""`data.normalization`: per frame as the reference kit's NeuroNormalizer, "auto", "none", and
the same normalization in the pipeline, the dataset card and a loaded checkpoint."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sensorium_jax.data import normalization as norm_lib
from sensorium_jax.data.card import CARD_FILE, DatasetCard
from sensorium_jax.data.datasets import NormalizedStore, open_training_store
from sensorium_jax.data.pipeline import make_eval_batches, make_sampler, make_train_dataset
from sensorium_jax.errors import InputDataError
from sensorium_jax.inference.inputs import pipeline_inputs

CLIP = 12


def read_raw(store, mouse: int, trial: int) -> dict[str, np.ndarray]:
    """One whole stored trial, raw, in the source folder's layout (frames last)."""
    arrays, small = store.arrays(mouse), store.small_arrays(mouse)
    return {
        "videos": np.moveaxis(arrays["videos"][trial].read().result().astype(np.float64), 0, -1),  # [H, W, T]
        "responses": arrays["responses"][trial].read().result().astype(np.float64).T,  # [N, T]
        "behavior": np.asarray(small["behavior"][trial], np.float64).T,  # [k, T]
        "pupil_center": np.asarray(small["pupil_center"][trial], np.float64).T,  # [2, T]
    }


@np.errstate(divide="ignore", invalid="ignore")  # as the reference: inf/NaN where a frame's std is 0
def neuro_normalizer(trial: dict[str, np.ndarray], stats: dict) -> dict[str, np.ndarray]:
    """neuralpredictors' NeuroNormalizer on a whole trial (float64, frames last, stats "all")."""
    f = {key: {name: np.asarray(value, np.float64) for name, value in stats[key]["all"].items()}
         for key in ("videos", "responses", "behavior", "pupil_center")}
    t = trial["videos"].shape[-1]
    s = f["responses"]["std"]
    threshold = 0.01 * np.nanmean(s)
    precision = np.ones_like(s) / threshold
    precision[s > threshold] = 1 / s[s > threshold]
    return {
        "videos": (trial["videos"] - f["videos"]["mean"][..., :t]) / f["videos"]["std"][..., :t],
        "responses": trial["responses"] * precision[..., :t],
        "behavior": trial["behavior"] * (1 / f["behavior"]["std"][..., :t]),
        "pupil_center": (trial["pupil_center"] - f["pupil_center"]["mean"][..., :t]) / f["pupil_center"]["std"][..., :t],
    }


@pytest.fixture(scope="module")
def per_neuron_store(tmp_path_factory) -> Path:
    from sensorium_jax.data import synthetic
    from sensorium_jax.data.convert import convert

    folder = tmp_path_factory.mktemp("per_neuron")
    sources = synthetic.generate(folder / "raw", preset="tiny", seed=1, mice=1, statistics="per_neuron",
                                 progress=False)
    convert(sources, folder / "store")
    return folder / "store"


def offset_clip(store) -> tuple[int, int, np.ndarray]:
    """A training step, the row of its first clip that starts past frame 0, and that clip."""
    sampler = make_sampler(store, clip_length=CLIP, seed=3, clips_per_mouse=2)
    for step in range(50):
        clips = sampler(step)
        starts = np.flatnonzero(clips[:, 2] > 0)
        if len(starts):
            return step, int(starts[0]), clips[starts[0]]
    raise AssertionError("no clip with an offset start in 50 steps")


def test_per_frame_equals_the_reference_formulas_on_an_offset_clip(tiny_store):
    store = NormalizedStore(tiny_store, "per_frame")
    step, row, (mouse, trial, start) = offset_clip(store)
    dataset = make_train_dataset(store, clip_length=CLIP, clips_per_mouse=2, seed=3, read_threads=0, prefetch=0,
                                 num_steps=step + 1)
    batch = list(dataset)[step]
    stats = store.source_statistics(int(mouse))
    expected = neuro_normalizer(read_raw(store, int(mouse), int(trial)), stats)
    frames = slice(int(start), int(start) + CLIP)
    n = store.meta(int(mouse)).n_neurons
    np.testing.assert_allclose(batch["video"][row, ..., 0], np.moveaxis(expected["videos"][..., frames], -1, 0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch["responses"][row, :, :n], expected["responses"][:, frames].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch["behavior"][row], expected["behavior"][:, frames].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch["pupil_center"][row], expected["pupil_center"][:, frames].T, rtol=1e-5, atol=1e-5)
    # The statistics really vary by frame, so statistics sliced from frame 0 would be caught.
    std = stats["responses"]["all"]["std"]
    assert not np.allclose(std[:, frames], std[:, :CLIP], rtol=1e-3)


def test_response_floor_uses_the_mean_over_neurons_and_frames():
    std = np.array([[1.0, 3.0], [0.001, 0.0], [2.0, np.nan]], np.float32)  # [N, T] as stored
    threshold = 0.01 * np.nanmean(std)
    scale = norm_lib.response_scale(std)
    np.testing.assert_allclose(scale, [[1, 3], [threshold, threshold], [2, threshold]], rtol=1e-6)


def test_auto_is_per_frame_on_a_per_frame_store_and_per_neuron_otherwise(tiny_store, per_neuron_store):
    frame, neuron = NormalizedStore(tiny_store, "auto"), NormalizedStore(per_neuron_store, "auto")
    assert {frame.normalization(m).mode for m in frame.mice} == {"per_frame"}
    assert {neuron.normalization(m).mode for m in neuron.mice} == {"per_neuron"}
    assert [m.normalization for m in frame.card().mice] == ["per_frame"] * len(frame.mice)
    assert frame.card().normalization == "auto" and neuron.card().mice[0].frames is None
    mouse = frame.mice[0]
    auto = next(make_eval_batches(frame, mouse, "oracle", 2))
    explicit = next(make_eval_batches(NormalizedStore(tiny_store, "per_frame"), mouse, "oracle", 2))
    per_neuron = next(make_eval_batches(NormalizedStore(tiny_store, "per_neuron"), mouse, "oracle", 2))
    np.testing.assert_array_equal(auto["responses"], explicit["responses"])
    assert not np.allclose(auto["responses"], per_neuron["responses"])
    with pytest.raises(InputDataError, match="per_frame"):
        NormalizedStore(per_neuron_store, "per_frame")


def test_a_config_without_the_mode_trains_per_neuron(smoke_config):
    del smoke_config.data["normalization"]
    assert open_training_store(smoke_config.data).normalization_mode == "per_neuron"


def test_card_round_trip_normalizes_raw_trials_like_the_pipeline(tiny_store):
    store = NormalizedStore(tiny_store, "auto")
    card = DatasetCard.from_json(store.card().to_json())  # what a checkpoint keeps
    mouse = store.mice[1]
    batch = next(make_eval_batches(store, mouse, "oracle", 2))
    trial = int(batch["trial"][0])
    length = int(store.meta(mouse).lengths[trial])
    raw = read_raw(store, store.mouse_index(mouse), trial)
    inputs = pipeline_inputs(card, np.moveaxis(raw["videos"], -1, 0).astype(np.float32)[:length],
                             raw["behavior"].T.astype(np.float32)[:length],
                             raw["pupil_center"].T.astype(np.float32)[:length], mouse)
    for key in ("video", "behavior", "pupil_center"):
        np.testing.assert_array_equal(inputs[key][0], batch[key][0, :length])
    np.testing.assert_array_equal(card.mice[1].frames["response_scale"],
                                  store.normalization(mouse).response_scale)
    # A stimulus longer than the per-frame statistics: its extra frames take the last frame's constants.
    recorded = card.mice[1].frames["video_mean"].shape[0]
    frames = recorded + 3
    video = np.full((frames, *card.frame_shape), 100.0, np.float32)
    longer = pipeline_inputs(card, video, np.ones((frames, card.behavior_dim), np.float32),
                             np.zeros((frames, 2), np.float32), mouse)
    constants = card.mice[1].frames
    last = (100.0 - constants["video_mean"][-1]) / constants["video_std"][-1]
    for t in range(recorded - 1, frames):
        np.testing.assert_allclose(longer["video"][0, t, ..., 0], last, rtol=1e-5)
    np.testing.assert_allclose(longer["video"][0, 0, ..., 0],
                               (100.0 - constants["video_mean"][0]) / constants["video_std"][0], rtol=1e-5)


def save_checkpoint(config, card: DatasetCard, workdir: Path) -> None:
    """An untrained model saved as the trainer saves one (train state, config, dataset card)."""
    import json

    import optax
    from flax import nnx

    from sensorium_jax.models import build_model
    from sensorium_jax.training import checkpointing
    from sensorium_jax.training.state import create_train_state

    _, state = create_train_state(build_model(config.model, card, nnx.Rngs(0)), optax.adam(1e-3))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CARD_FILE).write_text(card.to_json())  # the full card, once per run
    meta = {"config": json.loads(config.to_json_best_effort()),
            "dataset_card": json.loads(card.to_json(frames_file=CARD_FILE))}
    checkpoints = checkpointing.Checkpoints(workdir)
    checkpoints.save(checkpointing.BEST, 0, state, None, meta, 0.0)
    checkpoints.close()


def test_a_loaded_checkpoint_normalizes_like_the_pipeline(smoke_config, tiny_store, tmp_path):
    from sensorium_jax.inference import load

    config = smoke_config
    config.data.normalization = "auto"
    store = open_training_store(config.data)  # as the trainer opens it: "auto"
    save_checkpoint(config, store.card(), tmp_path / "run")
    # The checkpoint references the run's per-frame constants instead of carrying them.
    meta_files = list((tmp_path / "run" / "checkpoints").rglob("meta/*"))
    assert meta_files and max(f.stat().st_size for f in meta_files if f.is_file()) < 200_000
    assert (tmp_path / "run" / CARD_FILE).stat().st_size > 1_000_000
    model = load(tmp_path / "run")
    assert model.card.mice[0].normalization == "per_frame" == store.normalization(0).mode
    mouse = store.mice[0]
    batch = next(make_eval_batches(open_training_store(model.config.data), mouse, "oracle", 1))
    length = int(batch["frame_mask"][0].sum())
    raw = read_raw(store, 0, int(batch["trial"][0]))
    inputs = model.normalize_inputs(np.moveaxis(raw["videos"], -1, 0).astype(np.float32)[:length],
                                    raw["behavior"].T.astype(np.float32)[:length],
                                    raw["pupil_center"].T.astype(np.float32)[:length], mouse)
    for key in ("video", "behavior", "pupil_center"):
        np.testing.assert_array_equal(inputs[key][0], batch[key][0, :length])

    # A checkpoint written before the mode existed: its card and config read as per neuron.
    old = json.loads(NormalizedStore(tiny_store, "per_neuron").card().to_json())
    for entry in (old, *old["mice"]):
        del entry["normalization"]
    for entry in old["mice"]:
        del entry["frames"]
    del config.data["normalization"]
    save_checkpoint(config, DatasetCard.from_json(json.dumps(old)), tmp_path / "old")
    legacy = load(tmp_path / "old")
    assert legacy.config.data.normalization == "per_neuron" == legacy.card.mice[0].normalization
    per_neuron = next(make_eval_batches(open_training_store(legacy.config.data), mouse, "oracle", 1))
    inputs = legacy.normalize_inputs(np.moveaxis(raw["videos"], -1, 0).astype(np.float32)[:length],
                                     raw["behavior"].T.astype(np.float32)[:length],
                                     raw["pupil_center"].T.astype(np.float32)[:length], mouse)
    np.testing.assert_allclose(inputs["video"][0], per_neuron["video"][0, :length], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(inputs["behavior"][0], per_neuron["behavior"][0, :length], rtol=1e-6)


def test_none_keeps_raw_values_and_submissions_divide_by_the_std(tiny_store, tmp_path):
    from sensorium_jax.evaluation.submission import SUBMISSION_TIERS, SubmissionWriter
    from sensorium_jax.inference.predictor import convert_units

    store = NormalizedStore(tiny_store, "none")
    mouse = store.mice[0]
    batch = next(make_eval_batches(store, mouse, "live_test_main", 2))
    trial, length = int(batch["trial"][0]), int(batch["frame_mask"][0].sum())
    raw = read_raw(store, 0, trial)
    n = store.meta(mouse).n_neurons
    np.testing.assert_array_equal(batch["video"][0, :length, ..., 0], np.moveaxis(raw["videos"], -1, 0)[:length])
    np.testing.assert_array_equal(batch["responses"][0, :length, :n], raw["responses"].T[:length])
    np.testing.assert_array_equal(batch["behavior"][0, :length], raw["behavior"].T[:length])
    np.testing.assert_array_equal(batch["pupil_center"][0, :length], raw["pupil_center"].T[:length])
    card = DatasetCard.from_json(store.card().to_json())
    video = np.moveaxis(raw["videos"], -1, 0)[:length].astype(np.float32)
    assert np.array_equal(pipeline_inputs(card, video, raw["behavior"].T[:length].astype(np.float32),
                                          raw["pupil_center"].T[:length].astype(np.float32), mouse)["video"][0, ..., 0],
                          video)
    np.testing.assert_allclose(card.mice[0].mean_response, store.meta(mouse).statistics["responses"]["all"]["mean"])

    # Raw predictions -> normalized units: divided by the per-frame std (floored) of each frame.
    predictions = np.random.default_rng(0).uniform(0.1, 5, (length, n)).astype(np.float32)
    stds = store.source_statistics(mouse)["responses"]["all"]["std"].astype(np.float64)  # [N, F]
    threshold = 0.01 * np.nanmean(stds)
    divisor = np.where(stds > threshold, stds, threshold).T[:length]
    expected = predictions / divisor
    columns = np.arange(n)
    np.testing.assert_allclose(convert_units(predictions, norm_lib.from_card(card.mice[0]), columns, raw_units=False),
                               expected, rtol=1e-5)
    assert convert_units(predictions, norm_lib.from_card(card.mice[0]), columns, raw_units=True) is predictions

    writer = SubmissionWriter(tmp_path, store)
    writer(mouse, "live_test_main", np.array([trial]), predictions[None], batch["frame_mask"][:1, :length])
    writer.close()
    import pyarrow.parquet as pq

    written = pq.read_table(tmp_path / SUBMISSION_TIERS["live_test_main"][0]).to_pylist()[0]
    burn_in = store.meta(mouse).dataset_kind.burn_in
    np.testing.assert_allclose(np.asarray(written["prediction"]).T, expected[burn_in:], rtol=1e-5)


def test_bonus_submission_files_are_named_as_the_competition_expects(tiny_store, tmp_path):
    from sensorium_jax.evaluation.submission import SUBMISSION_TIERS, SubmissionWriter

    assert SUBMISSION_TIERS["live_test_bonus"][0] == "predictions_live_test_bonus_ood.parquet.brotli"
    assert SUBMISSION_TIERS["final_test_bonus"][0] == "predictions_final_test_bonus_ood.parquet.brotli"
    assert SUBMISSION_TIERS["live_test_main"][0] == "predictions_live_main.parquet.brotli"
    store = NormalizedStore(tiny_store, "auto")
    mouse = store.mice[0]
    writer = SubmissionWriter(tmp_path, store)
    for tier in ("live_test_bonus", "final_test_bonus"):
        batch = next(make_eval_batches(store, mouse, tier, 1))
        writer(mouse, tier, batch["trial"], batch["responses"][..., : store.meta(mouse).n_neurons], batch["frame_mask"])
    (archive,) = writer.close()
    with zipfile.ZipFile(archive) as handle:
        assert sorted(handle.namelist()) == ["predictions_final_test_bonus_ood.parquet.brotli",
                                             "predictions_live_test_bonus_ood.parquet.brotli"]


def test_frames_few_trials_reach_keep_the_last_supported_frames_constants():
    frames = 5
    per_frame = norm_lib.Normalization(
        video_mean=np.arange(frames, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32),
        video_std=np.array([1.0, 2.0, 3.0, 1e-3, 0.0], np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32),
        response_scale=np.arange(1, frames + 1, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32),
        behavior_scale=np.ones((frames, 2), np.float32), pupil_mean=np.zeros((frames, 2), np.float32),
        pupil_std=np.ones((frames, 2), np.float32), frames=frames, mode=norm_lib.PER_FRAME)
    lengths = np.array([3, 3, 3, 5])  # frames 3 and 4: one trial in four
    assert norm_lib.supported_frames(lengths, frames) == 3
    held = norm_lib.hold_unsupported_frames(per_frame, lengths)
    np.testing.assert_array_equal(held.video_std[:, 0, 0], [1.0, 2.0, 3.0, 3.0, 3.0])
    np.testing.assert_array_equal(held.video_mean[:, 0, 0], [0.0, 1.0, 2.0, 2.0, 2.0])
    np.testing.assert_allclose(held.response_precision[:, 0], 1 / np.array([1, 2, 3, 3, 3], np.float32))
    every_trial = norm_lib.hold_unsupported_frames(per_frame, np.array([5, 5, 4]))
    np.testing.assert_array_equal(every_trial.video_std, per_frame.video_std)


def test_a_long_trial_is_not_blown_up_by_frames_only_it_reaches(tiny_store):
    """The tiny preset has trials of 60 frames and two longer ones: the statistics of frames
    60..69 come from those two alone (std near 0), which must not reach the inputs."""
    store = NormalizedStore(tiny_store, "per_frame")
    meta = store.meta(0)
    longest = int(np.argmax(meta.lengths))
    assert meta.lengths[longest] > np.median(meta.lengths)
    tier = str(meta.tiers[longest])
    for batch in make_eval_batches(store, 0, tier, 64):
        row = np.flatnonzero(batch["trial"] == longest)
        if row.size:
            valid = batch["frame_mask"][row[0]].astype(bool)
            assert np.abs(batch["video"][row[0]][valid]).max() < 20
            break
    else:
        raise AssertionError("the longest trial was not in its tier's batches")


def test_a_checkpoint_refuses_per_frame_constants_other_than_its_own(smoke_config, tiny_store, tmp_path):
    from sensorium_jax.inference import load

    smoke_config.data.normalization = "auto"
    card = open_training_store(smoke_config.data).card()
    save_checkpoint(smoke_config, card, tmp_path / "run")
    full = json.loads((tmp_path / "run" / CARD_FILE).read_text())
    full["mice"][0]["frames"]["video_std"] = full["mice"][1]["frames"]["video_std"]  # another mouse's
    (tmp_path / "run" / CARD_FILE).write_text(json.dumps(full))
    with pytest.raises(InputDataError, match="per-frame constants the checkpoint was trained with"):
        load(tmp_path / "run")
    (tmp_path / "run" / CARD_FILE).unlink()
    with pytest.raises(InputDataError):
        load(tmp_path / "run" / "checkpoints" / "best")
