"""The synthetic digital mouse: official layout, determinism, repeats, ceiling, stimulus drive."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sensorium_jax.data import synthetic
from sensorium_jax import metrics as M
from sensorium_jax.data import raw
from sensorium_jax.data.convert import convert
from sensorium_jax.data.kinds import VIDEO
from sensorium_jax.data.store import open_store
from sensorium_jax.data.synthetic import neurons as synthetic_neurons
from sensorium_jax.data.synthetic import stimuli as synthetic_stimuli
from sensorium_jax.data.synthetic.oracle import read_rate_and_response

REPO = Path(__file__).resolve().parents[1]
STAT_KEYS = ("videos", "responses", "behavior", "pupil_center")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[Path]:
    return synthetic.generate(tmp_path_factory.mktemp("tiny"), "tiny", seed=0, progress=False)


@pytest.fixture(scope="module")
def tiny_static(tmp_path_factory) -> list[Path]:
    return synthetic.generate(tmp_path_factory.mktemp("static"), "tiny", seed=0, mice=1, static=True, progress=False)


def _load(folder: Path, key: str, i: int) -> np.ndarray:
    return np.load(folder / "data" / key / f"{i}.npy")


def _length(responses: np.ndarray) -> int:
    nan = np.isnan(responses[0])
    return int(np.argmax(nan)) if nan.any() else responses.shape[-1]


def test_video_folders_have_the_official_layout(tiny):
    assert [p.name for p in tiny] == ["dynamic-synthetic-0-0", "dynamic-synthetic-0-1"]
    counts = []
    for folder in tiny:
        tiers = np.load(folder / "meta" / "trials" / "tiers.npy")
        hashes = np.load(folder / "meta" / "trials" / "condition_hash.npy")
        unit_ids = np.load(folder / "meta" / "neurons" / "unit_ids.npy")
        coordinates = np.load(folder / "meta" / "neurons" / "cell_motor_coordinates.npy")
        n, n_trials = unit_ids.shape[0], tiers.shape[0]
        counts.append(n)
        low, high = synthetic.PRESETS["tiny"].neurons
        assert low <= n <= high and coordinates.shape == (n, 3) and hashes.shape == (n_trials,)
        assert set(tiers) == set(("train",) + VIDEO.repeated_tiers)
        padded = None
        for i in range(n_trials):
            video, responses = _load(folder, "videos", i), _load(folder, "responses", i)
            behavior, pupil = _load(folder, "behavior", i), _load(folder, "pupil_center", i)
            rate = np.load(folder / "ground_truth" / "rates" / f"{i}.npy")
            padded = padded or video.shape[-1]
            assert video.shape == (36, 64, padded) and responses.shape == (n, padded)
            assert behavior.shape == (2, padded) and pupil.shape == (2, padded) and rate.shape == (n, padded)
            assert {a.dtype for a in (video, responses, behavior, pupil, rate)} == {np.dtype(np.float32)}
            length = _length(responses)
            for array in (video.reshape(-1, padded), responses, behavior, pupil, rate):
                assert np.isfinite(array[:, :length]).all() and np.isnan(array[:, length:]).all()
            assert 0 <= np.nanmin(video) and np.nanmax(video) <= 255
            assert (responses[:, :length] >= 0).all() and (rate[:, :length] > 0).all()
        for key in STAT_KEYS:
            for group in ("all", "stimulus_frame"):
                for stat in ("mean", "std", "min", "max", "median"):
                    assert (folder / "meta" / "statistics" / key / group / f"{stat}.npy").exists()
        truth = folder / "ground_truth"
        fields = np.load(truth / "receptive_fields.npz")
        assert fields["position"].shape == (n, 2) and set(fields["cell_type"]) <= {0, 1}
        params = json.loads((truth / "params.json").read_text())
        assert params["n_neurons"] == n and params["kind"] == "video"
        assert len(json.loads((truth / "trials.json").read_text())) == n_trials
    assert counts[0] != counts[1]  # mice differ in their number of neurons
    for folder in tiny:  # the official reader accepts the folders (and ignores ground_truth/)
        mouse = raw.read_mouse_folder(folder)
        assert mouse.kind == "video" and mouse.n_neurons == counts[tiny.index(folder)]
        trial = raw.read_trial(mouse, 0)
        assert trial["videos"].shape[1:] == (36, 64) and trial["behavior"].shape[1] == 2


def test_repeats_share_the_video_and_differ_in_responses(tiny):
    folder = tiny[0]
    tiers = np.load(folder / "meta" / "trials" / "tiers.npy")
    hashes = np.load(folder / "meta" / "trials" / "condition_hash.npy")
    oracle = np.flatnonzero(tiers == "oracle")
    first = hashes[oracle[0]]
    repeats = [i for i in oracle if hashes[i] == first]
    assert len(repeats) == 3
    videos = [_load(folder, "videos", i) for i in repeats]
    responses = [_load(folder, "responses", i) for i in repeats]
    assert all(np.array_equal(videos[0], v, equal_nan=True) for v in videos[1:])
    assert not np.array_equal(responses[0], responses[1], equal_nan=True)
    behaviors = [_load(folder, "behavior", i) for i in repeats[:2]]
    assert not np.array_equal(*behaviors, equal_nan=True)
    other = [i for i in oracle if hashes[i] != first][0]
    assert not np.array_equal(videos[0], _load(folder, "videos", other), equal_nan=True)


def test_cli_is_deterministic_and_the_seed_matters(tiny, tmp_path):
    out = tmp_path / "again"
    command = [sys.executable, "-m", "sensorium_jax.data.synthetic", "--out", str(out), "--preset", "tiny"]
    command += ["--mice", "1", "--no-progress"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "oracle" in result.stdout and "dynamic-synthetic-0-0" in result.stdout
    files = sorted(p.relative_to(tiny[0]) for p in tiny[0].rglob("*") if p.is_file())
    again = sorted(p.relative_to(out / tiny[0].name) for p in (out / tiny[0].name).rglob("*") if p.is_file())
    assert files == again
    for name in files:  # byte-identical, ground truth included
        assert (tiny[0] / name).read_bytes() == (out / tiny[0].name / name).read_bytes(), name
    # another seed: other stimuli, other neurons
    preset = synthetic.PRESETS["tiny"]
    videos = [synthetic.trial_video(seed, synthetic.video_plan(preset, seed, 0)[0]) for seed in (0, 1)]
    assert not np.array_equal(videos[0], videos[1])
    first, second = synthetic.build_mouse(preset, 0, 0), synthetic.build_mouse(preset, 1, 0)
    assert not np.array_equal(first.population["position"], second.population["position"])


def test_cli_reports_bad_arguments_in_one_line(tmp_path):
    command = [sys.executable, "-m", "sensorium_jax.data.synthetic", "--out", str(tmp_path), "--mice", "0"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def _tier_trials(folder: Path, tier: str, cut: dict[int, int] | None = None):
    """Responses and ground-truth rates ([T, N] per trial, padding removed) and stimulus ids."""
    tiers = np.load(folder / "meta" / "trials" / "tiers.npy")
    hashes = np.load(folder / "meta" / "trials" / "condition_hash.npy")
    responses, rates, ids = [], [], []
    for i in np.flatnonzero(tiers == tier):
        rate, response = read_rate_and_response(folder, i)
        length = _length(response)
        responses.append(response[:, :length].T.astype(np.float32))
        rates.append(rate[:, :length].T.astype(np.float32))
        ids.append(str(hashes[i]))
    return responses, rates, ids


def _model_metrics(folder: Path, tier: str, burn_in: int) -> tuple[float, float]:
    """What `sensorium_jax.metrics` gives the rates scored as a model's prediction."""
    responses, rates, ids = _tier_trials(folder, tier)
    single = M.single_trial_correlation(responses, rates, burn_in=burn_in)
    average = M.correlation_to_average(responses, rates, ids, burn_in=burn_in)
    return float(np.mean(single)), float(np.mean(average))


def test_oracle_ceiling_is_the_models_metric_on_the_rates(tiny):
    """Scores are divided by the ceiling, so the generator's own float64 Pearson must give what
    the metrics give a model predicting the rates. Reference values (seed 0): single trial
    0.681 / 0.617, to average 0.771 / 0.697 (mice 0 / 1)."""
    for folder, (single, average) in zip(tiny, [(0.6811, 0.7713), (0.6168, 0.6971)]):
        saved = json.loads((folder / "ground_truth" / "oracle.json").read_text())
        assert set(saved) == set(VIDEO.repeated_tiers)
        entry = saved["oracle"]
        assert entry["burn_in"] == 15  # a quarter of the 60-frame tiny trials (50 from 100 frames on)
        assert entry["single_trial_correlation"] == pytest.approx(single, abs=1e-4)
        assert entry["correlation_to_average"] == pytest.approx(average, abs=1e-4)
        for tier in ("oracle", "final_test_main"):
            got = _model_metrics(folder, tier, saved[tier]["burn_in"])
            want = (saved[tier]["single_trial_correlation"], saved[tier]["correlation_to_average"])
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{folder.name} {tier}")


def test_oracle_averages_repeats_of_unequal_length_frame_by_frame(tiny, tmp_path):
    """Repeats cut short (as real recordings can be): the ceiling's to-average score averages
    each frame over the repeats that have it, as `metrics.correlation_to_average` does; cutting
    every repeat to the shortest (what the ceiling did before) gives 0.632 instead of 0.759 here."""
    import shutil

    folder = tmp_path / tiny[0].name
    shutil.copytree(tiny[0], folder)
    tiers = np.load(folder / "meta" / "trials" / "tiers.npy")
    hashes = np.load(folder / "meta" / "trials" / "condition_hash.npy")
    oracle = np.flatnonzero(tiers == "oracle")
    for stimulus, cut in zip(dict.fromkeys(hashes[oracle]), (30, 20, 45, 60)):
        first = oracle[hashes[oracle] == stimulus][0]  # one repeat of each stimulus ends early
        for path in (folder / "data" / "responses" / f"{first}.npy",
                     folder / "ground_truth" / "rates" / f"{first}.npy"):
            values = np.load(path)
            values[:, cut:] = np.nan
            np.save(path, values)
    ceiling = synthetic.oracle_ceiling(folder, tiers=["oracle"], burn_in=15)["oracle"]
    got = _model_metrics(folder, "oracle", 15)
    np.testing.assert_allclose(got, (ceiling["single_trial_correlation"], ceiling["correlation_to_average"]),
                               atol=1e-5)


def test_rates_are_stimulus_driven(tiny):
    """Rates follow the contrast energy inside each neuron's own RF, not inside another's."""
    folder = tiny[0]
    fields = np.load(folder / "ground_truth" / "receptive_fields.npz")
    tiers = np.load(folder / "meta" / "trials" / "tiers.npy")
    y, x = np.mgrid[0:36, 0:64]
    position, sigma = fields["position"], fields["sigma"]
    distance2 = (x[None] - position[:, 0, None, None]) ** 2 + (y[None] - position[:, 1, None, None]) ** 2
    weights = np.exp(-distance2 / (2 * sigma[:, None, None] ** 2))
    weights /= weights.sum((1, 2), keepdims=True)
    energy, rates = [], []
    for i in np.flatnonzero(tiers == "train"):
        video = _load(folder, "videos", i)
        rate = np.load(folder / "ground_truth" / "rates" / f"{i}.npy")
        length = _length(rate)
        frames = video[:, :, :length].transpose(2, 0, 1)
        local = np.einsum("nhw,thw->tn", weights, frames)
        contrast = np.einsum("nhw,thw->tn", weights, frames**2) - local**2  # local variance in the RF
        lagged = np.r_[0.0, 0.0, np.ones(6) / 6]  # the latency: mean over frames 2..7 before
        energy.append(np.stack([np.convolve(c, lagged, "full")[:length] for c in contrast.T], 1)[10:])
        rates.append(rate[:, :length].T[10:])
    energy, rates = np.concatenate(energy), np.concatenate(rates)

    def corr(a, b):
        a, b = a - a.mean(0), b - b.mean(0)
        return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))

    own = corr(rates, energy)
    far = np.argsort(-np.linalg.norm(position[:, None] - position[None], axis=-1), axis=1)[:, 0]
    other = corr(rates, energy[:, far])
    assert own.mean() > 0.2 and own.mean() > other.mean() + 0.1


def test_gray_screen_leaves_only_the_behavioural_gain():
    mouse = synthetic.build_mouse(synthetic.PRESETS["tiny"], seed=0, index=0)
    rng = np.random.default_rng(0)
    behavior, pupil = synthetic_neurons.video_behavior(rng, 40, mouse.behavior_model)
    gray = np.full((40, 36, 64), 128.0, np.float32)
    rate, _ = synthetic.simulate_video_trial(mouse, gray, behavior, pupil, rng)
    gain = synthetic_neurons.behavior_gain(behavior[0], behavior[1], mouse.population, mouse.behavior_model)
    baseline, tau = mouse.population["baseline"], mouse.population["calcium_tau"]
    resting = synthetic_neurons.calcium(gain * baseline, tau, gain[0] * baseline)
    assert np.allclose(rate, resting, rtol=1e-4)
    clip = synthetic_stimuli.natural_clip(rng, 40)
    driven, _ = synthetic.simulate_video_trial(mouse, clip, behavior, pupil, rng)
    assert (driven / resting).std(0).mean() > 0.5  # the stimulus, not the gain, moves the rates


def test_spatial_readout_paths_agree_and_follow_the_eye():
    bank = synthetic_neurons.FilterBank()
    rng = np.random.default_rng(1)
    population = synthetic_neurons.sample_population(rng, 60, bank)
    frames = synthetic_stimuli.natural_clip(rng, 6)
    shift = rng.normal(0, 2, (6, 2))
    args = (bank, population["position"], population["channel"])
    by_fft = synthetic_neurons.SpatialReadout(*args, direct_below=0)(frames, shift)
    by_matrix = synthetic_neurons.SpatialReadout(*args, direct_below=10**6)(frames, shift)
    assert np.allclose(by_fft, by_matrix, atol=1e-5 * np.abs(by_fft).max())
    # the RF moves with the eye: an eye shift e reads the map at position + e (a shift by
    # whole cells of every baseband grid keeps the bilinear weights, so this is exact)
    eye = np.array([[6.0, -6.0]])
    moved = synthetic_neurons.SpatialReadout(bank, population["position"] + eye[0], population["channel"])
    still = moved(frames[:1], np.zeros((1, 2)))
    shifted = synthetic_neurons.SpatialReadout(*args)(frames[:1], eye)
    assert np.allclose(still, shifted, atol=1e-4 * np.abs(still).max())


def test_compound_poisson_noise_has_the_planned_moments():
    rng = np.random.default_rng(2)
    n = 200_000
    mean = np.full((n, 3), [0.05, 1.0, 5.0], np.float32)
    scale = np.array([10.0, 2.0, 0.5], np.float32)
    values = synthetic_neurons.compound_poisson(rng, mean, scale)
    variance = scale * mean[0]
    assert np.all(np.abs(values.mean(0) - mean[0]) < 4 * np.sqrt(variance / n))
    assert np.allclose(values.var(0), variance, rtol=0.25)  # heavy tails: loose
    assert (values >= 0).all()


def test_static_folders_have_the_2022_layout(tiny_static):
    folder = tiny_static[0]
    assert folder.name == "static-synthetic-0-0"
    tiers = np.load(folder / "meta" / "trials" / "tiers.npy")
    image_ids = np.load(folder / "meta" / "trials" / "frame_image_id.npy")
    n = np.load(folder / "meta" / "neurons" / "unit_ids.npy").shape[0]
    assert set(tiers) == {"train", "validation", "test", "final_test"}
    for i in range(tiers.shape[0]):
        assert _load(folder, "images", i).shape == (1, 36, 64)
        assert _load(folder, "responses", i).shape == (n,)
        assert _load(folder, "behavior", i).shape == (3,) and _load(folder, "pupil_center", i).shape == (2,)
        assert np.load(folder / "ground_truth" / "rates" / f"{i}.npy").shape == (n,)
    repeats = np.flatnonzero((tiers == "validation") & (image_ids == image_ids[tiers == "validation"][0]))
    assert len(repeats) == 3
    assert np.array_equal(_load(folder, "images", repeats[0]), _load(folder, "images", repeats[1]))
    assert not np.array_equal(_load(folder, "responses", repeats[0]), _load(folder, "responses", repeats[1]))
    oracle = json.loads((folder / "ground_truth" / "oracle.json").read_text())
    assert set(oracle) == {"validation", "test", "final_test"}
    assert oracle["validation"]["single_trial_correlation"] == pytest.approx(0.5940, abs=1e-4)  # seed 0
    mouse = raw.read_mouse_folder(folder)
    assert mouse.kind == "static" and mouse.behavior_dim == 3 and mouse.frame_shape == (36, 64)
    # the static ceiling is the models' static metric on the same data (rates as predictions)
    validation = np.flatnonzero(tiers == "validation")
    responses = np.stack([_load(folder, "responses", i) for i in validation])
    rates = np.stack([np.load(folder / "ground_truth" / "rates" / f"{i}.npy") for i in validation])
    np.testing.assert_allclose(oracle["validation"]["single_trial_correlation"],
                               M.static_single_trial_correlation(responses, rates).mean(), atol=1e-5)
    np.testing.assert_allclose(oracle["validation"]["correlation_to_average"],
                               M.static_correlation_to_average(responses, rates, image_ids[validation]).mean(),
                               atol=1e-5)


def test_stimulus_types_reach_the_store_and_the_oracle(tiny, tmp_path):
    folder = tiny[0]
    trials = json.loads((folder / "ground_truth" / "trials.json").read_text())
    written = np.load(folder / "meta" / "trials" / "stimulus_type.npy")
    assert written.tolist() == [t["stimulus_type"] for t in trials]
    assert set(written) - {"natural"}  # the bonus tiers show out-of-distribution types
    convert([folder], tmp_path / "store", progress=False)
    meta = open_store(tmp_path / "store").meta(0)
    np.testing.assert_array_equal(meta.stimulus_types, written)
    assert meta.statistics_layout == "per_frame"  # the generator writes the release's layout
    oracle = json.loads((folder / "ground_truth" / "oracle.json").read_text())
    for tier in VIDEO.bonus_tiers:
        per_type = oracle[tier]["per_stimulus_type"]
        assert set(per_type) == set(written[meta.tiers == tier])
        assert sum(entry["trials"] for entry in per_type.values()) == oracle[tier]["trials"]
    assert "per_stimulus_type" not in oracle["oracle"]


def test_both_statistics_layouts_give_the_same_normalization(tmp_path):
    """Equal frames per trial (no long trials): pooling per-frame statistics is exact."""
    preset = dataclasses.replace(synthetic.PRESETS["tiny"], long_trials=0, train_trials=12,
                                 repeated_stimuli={tier: 1 for tier in VIDEO.repeated_tiers}, repeats=2)
    norms = {}
    for layout in ("per_frame", "per_neuron"):
        folder = synthetic.write_video_mouse(tmp_path / layout, preset, 0, 0, progress=False, statistics=layout)
        convert([folder], tmp_path / f"store-{layout}", progress=False)
        meta = open_store(tmp_path / f"store-{layout}").meta(0)
        assert meta.statistics_layout == layout
        norms[layout] = meta.normalization
    frame, neuron = norms["per_frame"], norms["per_neuron"]
    np.testing.assert_allclose(frame.video_mean, neuron.video_mean, rtol=1e-5)
    np.testing.assert_allclose(frame.video_std, neuron.video_std, rtol=1e-5)
    for name in ("response_scale", "behavior_scale", "pupil_mean", "pupil_std"):
        np.testing.assert_allclose(getattr(frame, name), getattr(neuron, name), rtol=1e-4, atol=1e-6, err_msg=name)


def test_cli_writes_the_per_neuron_layout_on_request(tmp_path):
    command = [sys.executable, "-m", "sensorium_jax.data.synthetic", "--out", "out", "--mice", "1",
               "--no-progress", "--statistics", "per_neuron"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    std = np.load(tmp_path / "out" / "dynamic-synthetic-0-0" / "meta" / "statistics" / "responses" / "all" / "std.npy")
    assert std.ndim == 1
    bad = subprocess.run(command[:-1] + ["sideways"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
