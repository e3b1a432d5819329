"""The grain pipeline: raw folder -> store -> batches equals the normalized raw arrays,
deterministically, resumably and identically whatever the number of processes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from folders import write_static_folder, write_video_folder
from test_store import write_integral_video_folder

from sensorium_jax.data import normalization, raw
from sensorium_jax.data.pipeline import make_eval_batches, make_sampler, make_train_dataset
from sensorium_jax.data.convert import convert
from sensorium_jax.data.store import open_store
from sensorium_jax.errors import InputDataError

CLIP = 6


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    sources = [write_video_folder(root / "src", "mouse-a", n_neurons=5),
               write_integral_video_folder(root / "src", "mouse-b", n_neurons=8)]
    convert(sources, root / "store", progress=False)
    folders = [raw.read_mouse_folder(s) for s in sources]
    return open_store(root / "store"), folders


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    sources = [write_static_folder(root / "src", "static-a", n_neurons=5),
               write_static_folder(root / "src", "static-b", n_neurons=3, seed=1)]
    convert(sources, root / "store", progress=False)
    return open_store(root / "store"), [raw.read_mouse_folder(s) for s in sources]


def expected_clip(folder, trial: int, start: int, length: int) -> dict[str, np.ndarray]:
    """What the pipeline must yield, from the official reader and the normalization functions."""
    values = raw.read_trial(folder, trial)
    norm = normalization.from_statistics(folder.statistics, folder.kind)
    window = slice(start, start + length)
    return {
        "video": normalization.normalize_video(values["videos"][window], norm)[..., None],
        "responses": normalization.normalize_responses(values["responses"][window], norm),
        "behavior": normalization.normalize_behavior(values["behavior"][window], norm),
        "pupil_center": normalization.normalize_pupil(values["pupil_center"][window], norm),
    }


def assert_batch_layout(batch, b: int, t: int, store) -> None:
    h, w = store.meta(0).frame_shape
    n_max, k = store.max_neurons, store.meta(0).behavior_dim
    shapes = {"video": (b, t, h, w, 1), "behavior": (b, t, k), "pupil_center": (b, t, 2),
              "responses": (b, t, n_max), "neuron_mask": (b, n_max), "frame_mask": (b, t), "mouse": (b,)}
    assert {key: value.shape for key, value in batch.items() if key in shapes} == shapes
    assert batch["mouse"].dtype == np.int32 and batch["neuron_mask"].dtype == bool
    assert all(batch[key].dtype == np.float32 for key in ("video", "behavior", "pupil_center", "responses"))
    for row, mouse in enumerate(batch["mouse"]):
        n = store.meta(int(mouse)).n_neurons
        assert batch["neuron_mask"][row].sum() == n and batch["neuron_mask"][row, :n].all()
        assert not batch["responses"][row, :, n:].any()


@pytest.mark.parametrize("kind", ["video", "static"])
def test_training_clips_equal_normalized_raw_arrays(kind, video, static):
    store, folders = video if kind == "video" else static
    clip = CLIP if kind == "video" else 1
    dataset = make_train_dataset(store, clip_length=clip, clips_per_mouse=3, seed=7, read_threads=1, prefetch=1)
    sampler = make_sampler(store, clip_length=clip, clips_per_mouse=3, seed=7)
    for step, batch in zip(range(2), dataset):
        assert_batch_layout(batch, 6, clip, store)
        assert batch["frame_mask"].all()
        np.testing.assert_array_equal(batch["mouse"], [0, 0, 0, 1, 1, 1])
        for row, (mouse, trial, start) in enumerate(sampler(step)):
            folder = folders[mouse]
            assert folder.tiers[trial] == "train" and 0 <= start <= folder.lengths[trial] - clip
            for key, value in expected_clip(folder, trial, start, clip).items():
                np.testing.assert_array_equal(batch[key][row, ..., : value.shape[-1]], value, err_msg=key)


@pytest.mark.parametrize("kind, tier", [("video", "oracle"), ("video", "live_test_main"), ("static", "validation")])
def test_eval_batches_are_whole_normalized_trials(kind, tier, video, static):
    store, folders = video if kind == "video" else static
    for mouse, folder in enumerate(folders):
        trials = np.flatnonzero(folder.tiers == tier)
        batches = list(make_eval_batches(store, folder.name, tier, batch_size=2))
        assert [len(b["trial"]) for b in batches] == [2] * (len(trials) // 2) + [1] * (len(trials) % 2)
        seen = np.concatenate([b["trial"] for b in batches])
        np.testing.assert_array_equal(seen, trials)
        stimuli = np.concatenate([b["stimulus"] for b in batches])
        ids = folder.stimulus_ids[trials]  # equal dense ids exactly where the reader's ids are equal
        np.testing.assert_array_equal(stimuli[:, None] == stimuli[None], ids[:, None] == ids[None])
        t = int(folder.lengths[trials].max())
        for batch in batches:
            assert batch["trial"].dtype == np.int32 and batch["stimulus"].dtype == np.int32
            assert_batch_layout(batch, len(batch["trial"]), t, store)
            assert (batch["mouse"] == mouse).all()
            for row, trial in enumerate(batch["trial"]):
                length = int(folder.lengths[trial])
                np.testing.assert_array_equal(batch["frame_mask"][row], np.arange(t) < length)
                for key, value in expected_clip(folder, trial, 0, length).items():
                    np.testing.assert_array_equal(batch[key][row, :length, ..., : value.shape[-1]], value)
                    assert not batch[key][row, length:].any()  # padding frames are zero


def test_eval_of_withheld_test_responses_are_zero(tmp_path):
    source = write_video_folder(tmp_path / "src", "mouse-z")
    for i in np.flatnonzero(raw.read_mouse_folder(source).tiers == "live_test_main"):
        path = source / "data" / "responses" / f"{i}.npy"
        responses = np.load(path)
        np.save(path, np.where(np.isnan(responses), np.nan, 0).astype(np.float32))
    convert([source], tmp_path / "store", progress=False)
    batches = list(make_eval_batches(open_store(tmp_path / "store"), 0, "live_test_main", 8))
    assert len(batches) == 1 and not batches[0]["responses"].any() and batches[0]["video"].any()


def first_batches(dataset, count: int) -> list[dict]:
    iterator = iter(dataset)
    return [{k: v.copy() for k, v in next(iterator).items()} for _ in range(count)]


def assert_same_batches(left: list[dict], right: list[dict]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_determinism_and_seed(video):
    store, _ = video
    make = lambda seed, threads: make_train_dataset(  # noqa: E731
        store, clip_length=CLIP, clips_per_mouse=2, seed=seed, read_threads=threads, prefetch=2)
    assert_same_batches(first_batches(make(3, 0), 3), first_batches(make(3, 2), 3))
    other = first_batches(make(4, 1), 1)[0]
    assert not np.array_equal(other["responses"], first_batches(make(3, 1), 1)[0]["responses"])


def test_iterator_state_restores_the_same_next_batches(video):
    store, _ = video
    dataset = make_train_dataset(store, clip_length=CLIP, mouse_sampling="uniform", batch_size=4, seed=1,
                                 read_threads=2, prefetch=3)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [{k: v.copy() for k, v in next(iterator).items()} for _ in range(2)]

    restored = iter(make_train_dataset(store, clip_length=CLIP, mouse_sampling="uniform", batch_size=4, seed=1,
                                       read_threads=2, prefetch=3))
    restored.set_state(pickle.loads(pickle.dumps(state)))
    assert_same_batches([{k: v.copy() for k, v in next(restored).items()} for _ in range(2)], expected)


@pytest.mark.parametrize("sampling", ["all", "uniform"])
def test_process_slices_concatenate_to_the_global_batch(sampling, video):
    store, _ = video
    options = dict(clip_length=CLIP, mouse_sampling=sampling, clips_per_mouse=2, seed=11, read_threads=1, prefetch=1)
    options["batch_size"] = 4 if sampling == "uniform" else None
    whole = first_batches(make_train_dataset(store, **options), 2)
    parts = [first_batches(make_train_dataset(store, process_index=p, process_count=2, **options), 2)
             for p in range(2)]
    for step in range(2):
        assert parts[0][step]["mouse"].shape == (2,)
        joined = {k: np.concatenate([parts[0][step][k], parts[1][step][k]]) for k in whole[step]}
        assert_same_batches([joined], [whole[step]])
    with pytest.raises(InputDataError, match="process_count=3"):
        make_train_dataset(store, process_index=0, process_count=3, **options)


def test_uniform_sampling_mixes_mice_with_correct_masks(video):
    store, _ = video
    dataset = make_train_dataset(store, clip_length=CLIP, mouse_sampling="uniform", batch_size=16, seed=2,
                                 read_threads=1, prefetch=1)
    batch = next(iter(dataset))
    assert set(batch["mouse"].tolist()) == {0, 1}  # 16 uniform draws: both mice (p = 1 - 2^-15)
    assert_batch_layout(batch, 16, CLIP, store)
    sampler = make_sampler(store, clip_length=CLIP, mouse_sampling="uniform", batch_size=16, seed=2)
    np.testing.assert_array_equal(batch["mouse"], sampler(0)[:, 0])


def test_kept_batches_are_never_overwritten(video):
    store, _ = video
    iterator = iter(make_train_dataset(store, clip_length=CLIP, clips_per_mouse=2, seed=0, read_threads=1,
                                       prefetch=1))
    kept = next(iterator)
    copy = {k: v.copy() for k, v in kept.items()}
    view = next(iterator)["responses"][:1]  # a view keeps its batch's buffer alive too
    view_copy = view.copy()
    for _ in range(4):
        next(iterator)
    assert_same_batches([kept], [copy])
    np.testing.assert_array_equal(view, view_copy)


def test_bad_training_settings_are_one_line_errors(video):
    store, _ = video
    with pytest.raises(InputDataError, match="clip_length|training trials"):
        make_train_dataset(store, clip_length=500, seed=0)
    with pytest.raises(InputDataError, match="batch_size"):
        make_train_dataset(store, clip_length=CLIP, mouse_sampling="uniform", seed=0)
    with pytest.raises(InputDataError, match="mouse_sampling"):
        make_train_dataset(store, clip_length=CLIP, mouse_sampling="random", seed=0)
