"""Reading and validating official SENSORIUM folders: good folders round-trip, bad ones fail in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from folders import (
    STATIC_PLAN,
    VIDEO_PADDED_LENGTH,
    VIDEO_PLAN,
    static_trials,
    video_trials,
    write_static_folder,
    write_video_folder,
)

from sensorium_jax.data import statistics
from sensorium_jax.data.kinds import VIDEO
from sensorium_jax.data.raw import read_mouse_folder, read_trial
from sensorium_jax.errors import InputDataError

N = 5


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_video_folder(tmp_path, n_neurons=N)


@pytest.fixture
def video_per_neuron(tmp_path: Path) -> Path:
    """Statistics per neuron ([N], [2], scalars), like older or hand-made folders."""
    return write_video_folder(tmp_path, name="dynamic-per-neuron", n_neurons=N, statistics="per_neuron")


@pytest.fixture
def static(tmp_path: Path) -> Path:
    return write_static_folder(tmp_path, n_neurons=N)


def expect_error(folder: Path, file: Path | str, field: str, *words: str) -> InputDataError:
    """Reading must fail with one line naming the offending file and field."""
    with pytest.raises(InputDataError) as info:
        read_mouse_folder(folder)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.path == str(file), message
    assert info.value.field == field, message
    for word in words:
        assert word in message, message
    return info.value


def trial_file(folder: Path, key: str, trial: int) -> Path:
    return folder / "data" / key / f"{trial}.npy"


def same_partition(a: np.ndarray, b: list) -> bool:
    """Equal ids exactly where the labels are equal."""
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(b)) for j in range(len(b)))


# ----------------------------------------------------------------------------- valid folders


def test_reads_video_folder(video: Path) -> None:
    folder = read_mouse_folder(video)
    n = len(VIDEO_PLAN)
    assert folder.kind == "video" and folder.name == "dynamic-tiny-Video"
    np.testing.assert_array_equal(folder.trial_ids, np.arange(n))  # numeric, not "10" < "2"
    assert folder.trial_ids.dtype == np.int64
    assert folder.tiers.tolist() == [tier for tier, _, _ in VIDEO_PLAN]
    assert folder.lengths.tolist() == [length for _, _, length in VIDEO_PLAN]
    assert folder.lengths.dtype == np.int64
    assert folder.stimulus_ids.dtype == np.int64
    assert same_partition(folder.stimulus_ids, [label for _, label, _ in VIDEO_PLAN])
    assert folder.stimulus_ids.max() == len({label for _, label, _ in VIDEO_PLAN}) - 1  # dense
    np.testing.assert_array_equal(folder.unit_ids, np.arange(N) + 100)
    assert folder.coordinates.shape == (N, 3) and folder.coordinates.dtype == np.float32
    assert (folder.frame_shape, folder.behavior_dim, folder.n_neurons) == ((4, 6), 2, N)
    assert folder.padded_length == VIDEO_PADDED_LENGTH
    stats = folder.statistics
    assert set(stats) == {"videos", "responses", "behavior", "pupil_center"}
    assert set(stats["videos"]) == {"all", "stimulus_frame"}
    assert set(stats["videos"]["all"]) == {"mean", "std", "min", "max", "median"}
    assert stats["videos"]["all"]["mean"].shape == ()
    assert stats["responses"]["all"]["std"].shape == (N,)
    assert stats["behavior"]["stimulus_frame"]["mean"].shape == (2,)
    assert stats["pupil_center"]["all"]["median"].shape == (2,)
    assert stats["responses"]["all"]["std"].dtype == np.float32


@pytest.mark.parametrize("image_shape", [(1, 9, 16), (1, 144, 256)])
def test_reads_static_folder(tmp_path: Path, image_shape: tuple[int, int, int]) -> None:
    folder = read_mouse_folder(write_static_folder(tmp_path, n_neurons=N, image_shape=image_shape))
    assert folder.kind == "static" and folder.name == "static-tiny"
    assert folder.tiers.tolist() == [tier for tier, _ in STATIC_PLAN]
    np.testing.assert_array_equal(folder.lengths, np.ones(len(STATIC_PLAN)))
    assert same_partition(folder.stimulus_ids, [label for _, label in STATIC_PLAN])
    assert (folder.frame_shape, folder.behavior_dim, folder.padded_length) == (image_shape[1:], 3, 1)
    assert folder.statistics["images"]["all"]["mean"].shape == ()
    assert folder.statistics["behavior"]["all"]["std"].shape == (3,)


def test_read_trial_video_is_time_major_and_trimmed(video: Path) -> None:
    folder = read_mouse_folder(video)
    for i, written in enumerate(video_trials(n_neurons=N)):
        trial = read_trial(folder, i)
        assert set(trial) == {"videos", "responses", "behavior", "pupil_center"}
        np.testing.assert_array_equal(trial["videos"], written["stimulus"].transpose(2, 0, 1))
        for key in ("responses", "behavior", "pupil_center"):
            np.testing.assert_array_equal(trial[key], written[key].T)
        assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in trial.values())
        assert not any(isinstance(a, np.memmap) for a in trial.values())


def test_read_trial_static_has_one_frame(static: Path) -> None:
    folder = read_mouse_folder(static)
    for i, written in enumerate(static_trials(n_neurons=N)):
        trial = read_trial(folder, i)
        np.testing.assert_array_equal(trial["videos"], written["stimulus"])  # 1 x H x W = T x H x W
        for key in ("responses", "behavior", "pupil_center"):
            np.testing.assert_array_equal(trial[key], written[key][None])
        assert trial["behavior"].shape == (1, 3) and trial["responses"].shape == (1, N)


def test_trial_with_longer_nan_padding(video: Path) -> None:
    for key in ("videos", "responses", "behavior", "pupil_center"):
        file = trial_file(video, key, 3)
        array = np.load(file)
        pad = [(0, 0)] * (array.ndim - 1) + [(0, 5)]
        np.save(file, np.pad(array, pad, constant_values=np.nan))
    folder = read_mouse_folder(video)
    assert folder.padded_length == VIDEO_PADDED_LENGTH + 5
    assert folder.lengths.tolist() == [length for _, _, length in VIDEO_PLAN]
    np.testing.assert_array_equal(read_trial(folder, 3)["responses"], video_trials(n_neurons=N)[3]["responses"].T)


def test_stimulus_ids_from_content_without_metadata(video: Path, static: Path) -> None:
    (video / "meta" / "trials" / "condition_hash.npy").unlink()
    (static / "meta" / "trials" / "frame_image_id.npy").unlink()
    assert same_partition(read_mouse_folder(video).stimulus_ids, [label for _, label, _ in VIDEO_PLAN])
    assert same_partition(read_mouse_folder(static).stimulus_ids, [label for _, label in STATIC_PLAN])


# ----------------------------------------------------------------------------- bad folders


def test_missing_folder(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope", tmp_path / "nope", "mouse folder", "existing folder")


@pytest.mark.parametrize(
    "relative, field",
    [
        ("meta/trials/tiers.npy", "tiers"),
        ("meta/neurons/unit_ids.npy", "unit_ids"),
        ("meta/neurons/cell_motor_coordinates.npy", "cell_motor_coordinates"),
        ("meta/statistics/responses/all/std.npy", "statistics responses/all/std"),
        ("meta/statistics/videos/stimulus_frame/mean.npy", "statistics videos/stimulus_frame/mean"),
    ],
)
def test_missing_meta_file(video: Path, relative: str, field: str) -> None:
    (video / relative).unlink()
    expect_error(video, video / relative, field, "no such file")


def test_trial_missing_one_array(video: Path) -> None:
    trial_file(video, "behavior", 4).unlink()
    expect_error(video, trial_file(video, "behavior", 4), "trial file", "missing")


def test_wrong_number_of_dimensions(video: Path, static: Path) -> None:
    np.save(trial_file(video, "responses", 2), np.zeros(VIDEO_PADDED_LENGTH, np.float32))
    expect_error(video, trial_file(video, "responses", 2), "responses", "2 dimension(s)")
    np.save(trial_file(static, "images", 1), np.zeros((9, 16), np.float32))
    expect_error(static, trial_file(static, "images", 1), "images", "3 dimension(s) (1 x H x W)")


def test_mismatched_frames_within_trial(video: Path) -> None:
    np.save(trial_file(video, "pupil_center", 1), np.zeros((2, VIDEO_PADDED_LENGTH - 1), np.float32))
    expect_error(video, trial_file(video, "pupil_center", 1), "pupil_center", "12 along axis 1")


def test_mismatched_neurons_between_trials(video: Path) -> None:
    np.save(trial_file(video, "responses", 6), np.ones((N + 1, VIDEO_PADDED_LENGTH), np.float32))
    expect_error(video, trial_file(video, "responses", 6), "responses", f"{N} along axis 0", "unit_ids")


def test_mismatched_neurons_against_meta(video: Path, static: Path) -> None:
    unit_ids = video / "meta" / "neurons" / "unit_ids.npy"
    np.save(unit_ids, np.arange(N - 1))
    expect_error(video, video / "meta/neurons/cell_motor_coordinates.npy", "cell_motor_coordinates")
    np.save(video / "meta/neurons/cell_motor_coordinates.npy", np.zeros((N - 1, 3), np.float32))
    np.save(video / "meta/statistics/responses/all/mean.npy", np.zeros(N - 1, np.float32))
    for group in ("all", "stimulus_frame"):
        for stat in ("mean", "std", "min", "max", "median"):
            np.save(video / f"meta/statistics/responses/{group}/{stat}.npy", np.zeros(N - 1, np.float32))
    expect_error(video, trial_file(video, "responses", 0), "responses", f"{N - 1} along axis 0")
    np.save(trial_file(static, "responses", 0), np.ones(N + 2, np.float32))
    expect_error(static, trial_file(static, "responses", 0), "responses", f"{N} along axis 0")


def test_non_numeric_npy(video: Path) -> None:
    np.save(trial_file(video, "behavior", 0), np.full((2, VIDEO_PADDED_LENGTH), "x"))
    expect_error(video, trial_file(video, "behavior", 0), "behavior", "numeric", "dtype <U1")


def test_object_npy_is_refused_without_unpickling(video: Path) -> None:
    np.save(trial_file(video, "videos", 0), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    expect_error(video, trial_file(video, "videos", 0), "videos", "readable .npy")


def test_truncated_npy(video: Path) -> None:
    file = trial_file(video, "responses", 5)
    file.write_bytes(file.read_bytes()[:-40])
    expect_error(video, file, "responses", "readable .npy")


def test_corrupt_npy(video: Path) -> None:
    file = trial_file(video, "videos", 5)
    file.write_bytes(b"not a numpy file at all")
    expect_error(video, file, "videos", "readable .npy")
    file.write_bytes(b"")
    expect_error(video, file, "videos", "readable .npy")


def test_unknown_tier(video: Path, static: Path) -> None:
    tiers = video / "meta" / "trials" / "tiers.npy"
    values = np.load(tiers)
    values[3] = "validation"  # a static tier in a video folder
    np.save(tiers, values)
    expect_error(video, tiers, "tiers", "'validation' at trial 3")
    tiers = static / "meta" / "trials" / "tiers.npy"
    values = np.load(tiers)
    values[0] = "oracle"
    np.save(tiers, values)
    expect_error(static, tiers, "tiers", "'oracle' at trial 0")


@pytest.mark.parametrize(
    "kind, missing, replacement",
    [("video", "oracle", "train"), ("video", "train", "none"), ("static", "validation", "train"), ("static", "train", "test")],
)
def test_tier_with_no_trials(tmp_path: Path, kind: str, missing: str, replacement: str) -> None:
    folder = write_video_folder(tmp_path) if kind == "video" else write_static_folder(tmp_path)
    tiers = folder / "meta" / "trials" / "tiers.npy"
    values = np.load(tiers)
    values[values == missing] = replacement
    np.save(tiers, values)
    expect_error(folder, tiers, "tiers", f"at least one '{missing}' trial")


def test_all_nan_trial(video: Path, static: Path) -> None:
    np.save(trial_file(video, "responses", 7), np.full((N, VIDEO_PADDED_LENGTH), np.nan, np.float32))
    expect_error(video, trial_file(video, "responses", 7), "responses", "all-NaN trial")
    np.save(trial_file(static, "responses", 2), np.full(N, np.nan, np.float32))
    expect_error(static, trial_file(static, "responses", 2), "responses", "all-NaN trial")


def test_nan_inside_trial(video: Path) -> None:
    file = trial_file(video, "responses", 0)
    original = np.load(file)
    responses = original.copy()
    responses[:, 4] = np.nan  # trial 0 has 10 valid frames
    np.save(file, responses)
    expect_error(video, file, "NaN padding", "NaN only at the end", "NaN at frame 4 but values at frame 5")
    responses = original.copy()
    responses[2, 3] = np.nan  # one neuron, mid-trial
    np.save(file, responses)
    expect_error(video, file, "NaN padding", "NaN in part of frame 3")


def test_nan_layout_disagrees_between_arrays(video: Path, static: Path) -> None:
    file = trial_file(video, "videos", 2)
    videos = np.load(file)
    videos[0, 0, 3] = np.nan
    np.save(file, videos)
    expect_error(video, file, "NaN padding", "as responses", "NaN at frame 3")
    np.save(file, np.nan_to_num(videos, nan=1.0))  # padding filled with values
    expect_error(video, file, "NaN padding", "values at frame 9")  # trial 2 has 9 valid frames
    file = trial_file(static, "behavior", 1)
    np.save(file, np.array([1.0, np.nan, 2.0], np.float32))
    expect_error(static, file, "behavior", "no NaN in a static trial")


@pytest.mark.parametrize(
    "relative, value, words",
    [
        ("videos/all/mean.npy", np.zeros(2), "scalar or size-1"),
        ("responses/all/std.npy", np.ones(N + 1), f"[{N}]"),
        ("behavior/stimulus_frame/mean.npy", np.ones(3), "[2]"),
        ("pupil_center/all/median.npy", np.ones((2, 1)), "[2]"),
    ],
)
def test_statistics_of_wrong_shape(video_per_neuron: Path, relative: str, value: np.ndarray, words: str) -> None:
    video = video_per_neuron
    file = video / "meta" / "statistics" / relative
    np.save(file, value)
    group, stat = relative.split("/")[1], relative.split("/")[2][:-4]
    expect_error(video, file, f"statistics {relative.split('/')[0]}/{group}/{stat}", words)


def test_size_one_video_statistics_are_accepted(video_per_neuron: Path) -> None:
    video = video_per_neuron
    np.save(video / "meta/statistics/videos/all/mean.npy", np.array([[7.5]], np.float32))
    assert read_mouse_folder(video).statistics["videos"]["all"]["mean"].shape == ()


def test_reads_both_statistics_layouts(video: Path, video_per_neuron: Path) -> None:
    per_frame, per_neuron = read_mouse_folder(video), read_mouse_folder(video_per_neuron)
    assert (per_frame.statistics_layout, per_neuron.statistics_layout) == ("per_frame", "per_neuron")
    given = per_frame.source_statistics  # as the folder gave them: one padded trial's shape
    T = VIDEO_PADDED_LENGTH
    assert given["videos"]["all"]["mean"].shape == (4, 6, T)
    assert given["responses"]["stimulus_frame"]["std"].shape == (N, T)
    assert given["behavior"]["all"]["median"].shape == (2, T) and given["pupil_center"]["all"]["max"].shape == (2, T)
    for folder in (per_frame, per_neuron):  # what normalization uses: per neuron in both
        assert folder.statistics["videos"]["all"]["mean"].shape == ()
        assert folder.statistics["responses"]["all"]["std"].shape == (N,)
        assert folder.statistics["pupil_center"]["all"]["mean"].shape == (2,)
    assert per_neuron.source_statistics is per_neuron.statistics
    # same trials: pooled frame means equal the direct means where every frame has equal counts
    np.testing.assert_allclose(per_frame.statistics["responses"]["all"]["min"],
                               per_neuron.statistics["responses"]["all"]["min"])


@pytest.mark.parametrize(
    "relative, value, words",
    [
        ("videos/all/mean.npy", np.zeros((4, 6)), ("scalar or size-1", "[4, 6, T]")),
        ("responses/all/std.npy", np.ones((N + 1, VIDEO_PADDED_LENGTH)), (f"[{N}]", f"[{N}, T]")),
        ("behavior/all/mean.npy", np.ones((2, 3, VIDEO_PADDED_LENGTH)), ("[2]", "[2, T]")),
        ("pupil_center/all/std.npy", np.ones((2, 7)), (f"[2, {VIDEO_PADDED_LENGTH}]", "per_frame layout")),
        ("responses/all/mean.npy", np.ones(N), (f"[{N}, {VIDEO_PADDED_LENGTH}]", "per_frame layout")),
    ],
)
def test_per_frame_statistics_of_wrong_shape(video: Path, relative: str, value: np.ndarray, words) -> None:
    file = video / "meta" / "statistics" / relative
    np.save(file, value.astype(np.float32))
    key, group, stat = relative[:-4].split("/")
    expect_error(video, file, f"statistics {key}/{group}/{stat}", *words)


def test_pool_frames_matches_a_direct_computation() -> None:
    """Equal counts per frame: pooled per-frame statistics = statistics over all samples."""
    rng = np.random.default_rng(3)
    S, F, H, W = 7, 5, 3, 4  # samples (trials) per frame, frames, frame shape
    samples = {
        "videos": rng.uniform(0, 255, (S, H, W, F)),
        "responses": rng.gamma(2.0, 1.0, (S, N, F)) * np.arange(1, F + 1),  # rates vary by frame
        "behavior": rng.normal(5.0, 1.0, (S, 2, F)),
        "pupil_center": rng.normal(0.0, 3.0, (S, 2, F)),
    }
    per_frame = {key: {"all": {"mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0),
                               "median": np.median(x, 0)}} for key, x in samples.items()}
    pooled = statistics.pool_frames(per_frame, VIDEO)
    for key, x in samples.items():
        flat = x.reshape(-1) if key == "videos" else np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
        for stat, direct in (("mean", flat.mean(0)), ("std", flat.std(0)), ("min", flat.min(0)),
                             ("max", flat.max(0))):
            np.testing.assert_allclose(pooled[key]["all"][stat], direct, rtol=1e-5, err_msg=f"{key} {stat}")
        assert pooled[key]["all"]["std"].dtype == np.float32
    assert pooled["videos"]["all"]["mean"].shape == () and pooled["responses"]["all"]["std"].shape == (N,)
    # a frame no trial reached (NaN, the release's padding) is skipped
    padded = {k: {"all": {s: np.concatenate([v, np.full(v.shape[:-1] + (2,), np.nan)], -1) for s, v in g["all"].items()}}
              for k, g in per_frame.items()}
    again = statistics.pool_frames(padded, VIDEO)
    np.testing.assert_allclose(again["responses"]["all"]["std"], pooled["responses"]["all"]["std"], rtol=1e-6)


def test_stimulus_types(video: Path) -> None:
    assert read_mouse_folder(video).stimulus_types.tolist() == ["unknown"] * len(VIDEO_PLAN)
    file = video / "meta" / "trials" / "stimulus_type.npy"
    types = np.asarray(["natural"] * (len(VIDEO_PLAN) - 1) + ["gratings"])
    np.save(file, types)
    np.testing.assert_array_equal(read_mouse_folder(video).stimulus_types, types)
    np.save(file, types[:-1])
    expect_error(video, file, "stimulus_type", f"{len(VIDEO_PLAN)} entries")


def test_static_statistics_of_wrong_shape(static: Path) -> None:
    file = static / "meta/statistics/behavior/all/std.npy"
    np.save(file, np.ones(2, np.float32))
    expect_error(static, file, "statistics behavior/all/std", "[3]")


def test_duplicate_trial_ids(video: Path) -> None:
    file = video / "meta" / "trials" / "trial_idx.npy"
    ids = np.arange(len(VIDEO_PLAN))
    ids[5] = 2
    np.save(file, ids)
    expect_error(video, file, "trial_idx", "distinct trial ids", "2 twice")


def test_non_numeric_trial_file_name(video: Path) -> None:
    np.save(video / "data" / "responses" / "07.npy", np.zeros((N, 12), np.float32))
    expect_error(video, video / "data/responses/07.npy", "file name", "trial number")


def test_tiers_length_mismatch(video: Path) -> None:
    file = video / "meta" / "trials" / "tiers.npy"
    np.save(file, np.load(file)[:-1])
    expect_error(video, file, "tiers", f"{len(VIDEO_PLAN)} entries", f"found {len(VIDEO_PLAN) - 1}")


def test_frame_shape_mismatch_between_trials(video: Path) -> None:
    np.save(trial_file(video, "videos", 4), np.zeros((4, 7, VIDEO_PADDED_LENGTH), np.float32))
    expect_error(video, trial_file(video, "videos", 4), "videos", "(4, 6)")


def test_both_stimulus_folders(video: Path) -> None:
    (video / "data" / "images").mkdir()
    expect_error(video, video / "data", "stimulus folder", "found both")


# ----------------------------------------------------------------------------- command line


def run_module(*args: str) -> subprocess.CompletedProcess:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "sensorium_jax.data.raw", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_cli_summary_and_error_is_one_line(video: Path) -> None:
    ok = run_module(str(video))
    assert ok.returncode == 0, ok.stderr
    line = ok.stdout.strip()
    assert "\n" not in line
    for word in ("dynamic-tiny-Video", "video", "train 4", "oracle 3", f"{N} neurons", "frames 4x6"):
        assert word in line, line
    trial_file(video, "pupil_center", 3).unlink()
    bad = run_module(str(video))
    assert bad.returncode == 2
    assert bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), bad.stderr
    assert "pupil_center/3.npy" in lines[0] and "Traceback" not in bad.stderr
