"""The zarr store: exact round trip, atomic and idempotent conversion, clear errors."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from folders import VIDEO_PADDED_LENGTH, video_trials, write_static_folder, write_video_folder

from sensorium_jax.data import normalization, raw
from sensorium_jax.data.card import DatasetCard
from sensorium_jax.data.convert import convert
from sensorium_jax.data.folder_writer import MouseFolderWriter
from sensorium_jax.data.store import open_store
from sensorium_jax.errors import InputDataError

REPO = str(Path(__file__).resolve().parents[1])


def write_integral_video_folder(root: Path, name: str = "dynamic-uint8", n_neurons: int = 6, seed: int = 5) -> Path:
    """Like the official releases: video pixels are whole numbers 0..255 stored as float32."""
    path = root / name
    writer = MouseFolderWriter(path, kind="video", padded_length=VIDEO_PADDED_LENGTH)
    for trial in video_trials(n_neurons, seed=seed):
        trial["stimulus"] = np.round(trial["stimulus"])
        writer.add_trial(**trial)
    writer.finish(np.arange(n_neurons), np.random.default_rng(seed).uniform(0, 500, (n_neurons, 3)))
    return path


def assert_store_matches(store, source: Path) -> None:
    folder = raw.read_mouse_folder(source)
    meta = store.meta(folder.name)
    assert meta.n_trials == folder.n_trials and meta.n_neurons == folder.n_neurons
    np.testing.assert_array_equal(meta.lengths, folder.lengths)
    np.testing.assert_array_equal(meta.tiers, folder.tiers)
    np.testing.assert_array_equal(meta.stimulus_ids, folder.stimulus_ids)
    np.testing.assert_array_equal(meta.unit_ids, folder.unit_ids)
    np.testing.assert_array_equal(meta.coordinates, folder.coordinates)
    arrays = store.arrays(folder.name)
    for i in range(folder.n_trials):
        trial, length = raw.read_trial(folder, i), int(folder.lengths[i])
        for key, expected in trial.items():
            stored = arrays[key][i].read().result()
            np.testing.assert_array_equal(stored[:length].astype(np.float32), expected, err_msg=f"{key} {i}")
            assert not stored[length:].any()  # padding is the fill value


def test_round_trip_is_exact(tmp_path):
    sources = [
        write_video_folder(tmp_path / "src", "mouse-a"),
        write_video_folder(tmp_path / "src", "mouse-b", n_neurons=8, seed=2),
        write_integral_video_folder(tmp_path / "src"),
    ]
    assert convert(sources, tmp_path / "store", progress=False) == ["mouse-a", "mouse-b", "dynamic-uint8"]
    store = open_store(tmp_path / "store")
    assert store.mice == ("mouse-a", "mouse-b", "dynamic-uint8")
    for source in sources:
        assert_store_matches(store, source)
    assert store.meta("mouse-a").video_dtype == "float32"  # fractional pixels stay float32
    assert store.meta("dynamic-uint8").video_dtype == "uint8"  # whole pixels: exact as uint8
    assert store.arrays("mouse-b")["responses"].shape == (11, VIDEO_PADDED_LENGTH, 8)
    assert json.loads((tmp_path / "store" / "zarr.json").read_text())["node_type"] == "group"

    clone = pickle.loads(pickle.dumps(store))  # handles are dropped and reopened
    np.testing.assert_array_equal(clone.arrays(0)["responses"][0].read().result(),
                                  store.arrays(0)["responses"][0].read().result())


def test_static_round_trip_and_card(tmp_path):
    source = write_static_folder(tmp_path / "src", "static-a")
    (source / "ground_truth").mkdir()  # what the synthetic generator leaves next to data/
    convert([source], tmp_path / "store", progress=False)
    store = open_store(tmp_path / "store")
    assert store.arrays(0)["videos"].shape == (9, 1, 9, 16)
    assert_store_matches(store, source)

    card = store.card()
    assert card.kind == "static" and card.synthetic and card.behavior_dim == 3 and card.frame_shape == (9, 16)
    stats = raw.read_mouse_folder(source).statistics
    std = stats["responses"]["all"]["std"]
    np.testing.assert_array_equal(card.mice[0].response_scale, normalization.response_scale(std))
    np.testing.assert_allclose(card.mice[0].mean_response, stats["responses"]["all"]["mean"] / std, rtol=1e-6)
    assert card.mice[0].video_mean == pytest.approx(float(stats["images"]["all"]["mean"]))
    assert not store.card(synthetic=False).synthetic
    again = DatasetCard.from_json(card.to_json())
    np.testing.assert_array_equal(again.mice[0].response_scale, card.mice[0].response_scale)


def test_response_scale_floors_small_stds():
    std = np.array([1.0, 2.0, 3.0, 0.0, 1e-5], np.float32)
    threshold = np.float32(0.01) * np.float32(std.mean())
    np.testing.assert_array_equal(normalization.response_scale(std), [1, 2, 3, threshold, threshold])


def test_failure_mid_write_leaves_no_partial_mouse(tmp_path, monkeypatch):
    src = tmp_path / "src"
    first, second = write_video_folder(src, "mouse-a"), write_video_folder(src, "mouse-b", seed=1)
    out = tmp_path / "store"
    convert([first], out, progress=False)
    before = (out / "mouse-a" / "meta.json").read_text()

    real_read_trial, calls = raw.read_trial, []

    def failing_read_trial(folder, i):
        calls.append(i)
        if folder.name == "mouse-b" and i == 3:
            raise OSError("disk full (simulated)")
        return real_read_trial(folder, i)

    monkeypatch.setattr(raw, "read_trial", failing_read_trial)
    with pytest.raises(OSError, match="simulated"):
        convert([first, second], out, progress=False)
    assert 3 in calls  # the failure happened half-way through mouse-b
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".lock")) == [
        "mouse-a", "store.json", "zarr.json"]
    assert open_store(out).mice == ("mouse-a",)
    assert (out / "mouse-a" / "meta.json").read_text() == before

    monkeypatch.setattr(raw, "read_trial", real_read_trial)
    convert([first, second], out, progress=False)
    assert open_store(out).mice == ("mouse-a", "mouse-b")


def test_invalid_source_writes_nothing(tmp_path):
    good, bad = write_video_folder(tmp_path / "src", "good"), write_video_folder(tmp_path / "src", "bad", seed=1)
    (bad / "data" / "responses" / "4.npy").unlink()
    with pytest.raises(InputDataError, match="4.npy"):
        convert([good, bad], tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()

    convert([good], tmp_path / "store", progress=False)
    index = (tmp_path / "store" / "store.json").read_text()
    with pytest.raises(InputDataError):
        convert([bad], tmp_path / "store", progress=False)
    assert (tmp_path / "store" / "store.json").read_text() == index


def test_conversion_is_idempotent(tmp_path):
    source = write_video_folder(tmp_path / "src", "mouse-a")
    out = tmp_path / "store"
    convert([source], out, progress=False)
    meta_file = out / "mouse-a" / "meta.json"
    stamp = (meta_file.stat().st_ino, meta_file.stat().st_mtime_ns)
    convert([source], out, progress=False)  # unchanged source: skipped
    assert (meta_file.stat().st_ino, meta_file.stat().st_mtime_ns) == stamp
    assert open_store(out).mice == ("mouse-a",)

    responses = np.load(source / "data" / "responses" / "0.npy")
    np.save(source / "data" / "responses" / "0.npy", responses + 1)  # the source changed
    convert([source], out, progress=False)
    store = open_store(out)
    assert store.mice == ("mouse-a",)
    length = int(store.meta(0).lengths[0])
    np.testing.assert_array_equal(store.arrays(0)["responses"][0, :length].read().result(),
                                  (responses + 1)[:, :length].T)


def test_bad_stores_name_file_and_field(tmp_path):
    with pytest.raises(InputDataError, match="no such folder"):
        open_store(tmp_path / "missing")
    out = tmp_path / "store"
    convert([write_video_folder(tmp_path / "src", "mouse-a")], out, progress=False)

    meta_file = out / "mouse-a" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["n_neurons"] = 7
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(InputDataError, match=r"meta.json: statistics.responses.all.mean: expected shape \(7,\), found shape \(5,\)"):
        open_store(out)

    meta["n_neurons"] = 5
    meta["lengths"] = meta["lengths"][:-1]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(InputDataError, match="meta.json: lengths"):
        open_store(out)

    meta["lengths"].append(9)
    meta_file.write_text(json.dumps(meta))
    array_meta = out / "mouse-a" / "responses" / "zarr.json"
    spec = json.loads(array_meta.read_text())
    spec["shape"][2] = 4
    array_meta.write_text(json.dumps(spec))
    with pytest.raises(InputDataError, match=r"responses/zarr.json: responses shape: expected \(11, 12, 5\)"):
        open_store(out).arrays("mouse-a")

    meta_file.unlink()
    with pytest.raises(InputDataError, match="mouse-a/meta.json: mouse metadata: expected an existing file"):
        open_store(out)
    (out / "store.json").unlink()
    with pytest.raises(InputDataError, match="store.json: store index: expected an existing file"):
        open_store(out)


def test_cli_converts_and_reports_bad_folders_in_one_line(tmp_path):
    write_video_folder(tmp_path / "src", "mouse-a")
    ok = subprocess.run(  # relative paths, resolved against the working directory
        [sys.executable, "-m", "sensorium_jax.data.convert", "src/mouse-a", "--out", "store", "--quiet"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO},
    )
    assert ok.returncode == 0, ok.stderr
    assert "mouse-a" in ok.stdout

    result = subprocess.run(
        [sys.executable, "-m", "sensorium_jax.data.convert", str(tmp_path / "nope"), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
    assert not (tmp_path / "x").exists()


def test_per_frame_source_statistics_and_stimulus_types_are_kept(tmp_path):
    source = write_video_folder(tmp_path / "src", "mouse-a")  # per-frame statistics
    types = np.asarray(["natural", "gratings"] * 5 + ["natural"])
    np.save(source / "meta" / "trials" / "stimulus_type.npy", types)
    convert([source], tmp_path / "store", progress=False)
    store, folder = open_store(tmp_path / "store"), raw.read_mouse_folder(source)
    meta = store.meta("mouse-a")
    assert meta.statistics_layout == "per_frame"
    np.testing.assert_array_equal(meta.stimulus_types, types)
    given = store.source_statistics("mouse-a")
    for key, groups in folder.source_statistics.items():
        for group, values in groups.items():
            for stat, value in values.items():
                np.testing.assert_array_equal(given[key][group][stat], value, err_msg=f"{key}/{group}/{stat}")
    np.testing.assert_array_equal(meta.normalization.response_scale,
                                  normalization.response_scale(folder.statistics["responses"]["all"]["std"]))

    meta_file = tmp_path / "store" / "mouse-a" / "meta.json"  # a store converted before these fields
    old = json.loads(meta_file.read_text())
    del old["statistics_layout"], old["stimulus_types"]
    meta_file.write_text(json.dumps(old))
    meta = open_store(tmp_path / "store").meta(0)
    assert meta.statistics_layout == "per_neuron" and set(meta.stimulus_types) == {"unknown"}
