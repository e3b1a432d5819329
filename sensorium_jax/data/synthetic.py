"""The synthetic digital mouse: official-format SENSORIUM folders from a known ground truth.

    python -m sensorium_jax.data.synthetic --out DIR --preset {tiny,small,full} \
        [--mice K] [--seed S] [--static]

writes one folder per mouse, `dynamic-synthetic-<seed>-<k>` (2023 video format) or
`static-synthetic-<seed>-<k>` (2022 image format with `--static`), through
`MouseFolderWriter`, trial by trial (memory stays bounded by one trial). Next to the
official files each folder has `ground_truth/`, which official readers ignore:

    ground_truth/params.json            the model, its constants and the tier layout
    ground_truth/receptive_fields.npz   per-neuron parameters (RF position in pixels, cell
                                        type, filter, latency, kernels, gains, noise)
    ground_truth/trials.json            per trial: tier, stimulus id and type, length, repeat
    ground_truth/rates/<i>.npy          noise-free rate of trial i, laid out like responses
    ground_truth/oracle.json            the oracle ceiling per repeated tier

The noise-free rate is the expected response given the stimulus, behaviour and eye
position, so `oracle_ceiling` (its correlation with the noisy responses) is the best score
any model can reach; a trained model's score reads as a fraction of it. Everything is
deterministic from the seed; a mouse's data depend only on (seed, mouse index), and the
repeated (validation/test) stimuli are shared by all mice of a seed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sensorium_jax.data import synthetic_neurons as neurons
from sensorium_jax.data import synthetic_stimuli as stimuli
from sensorium_jax.data.folder_writer import MouseFolderWriter
from sensorium_jax.errors import InputDataError, run_cli

VIDEO_REPEATED_TIERS = ("oracle", "live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus")
STATIC_REPEATED_TIERS = ("validation", "test", "final_test")
TIER_CODES = {tier: i for i, tier in enumerate(("train",) + VIDEO_REPEATED_TIERS + STATIC_REPEATED_TIERS)}
GROUND_TRUTH = "ground_truth"
BURN_IN = 50  # frames the SENSORIUM metrics drop from each trial
STATIC_BATCH = 256  # images simulated together


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes of one synthetic data set (per mouse unless said otherwise)."""

    name: str
    mice: int
    neurons: tuple[int, int]  # inclusive range; neighbouring mice get different counts
    train_trials: int
    frames: int  # frames of a trial
    long_trials: int  # train trials longer than `frames` (up to `max_frames`, NaN-padded)
    max_frames: int
    repeats: int  # presentations of each repeated stimulus
    repeated_stimuli: dict[str, int]  # video tier -> distinct stimuli
    calibration_clips: int  # independent natural clips of `frames` frames
    static_train: int
    static_repeated: dict[str, int]  # static tier -> distinct images
    bank: neurons.FilterBank = neurons.FilterBank()
    rates_dtype: str = "float32"
    median_samples: int = 4096  # rows the writer keeps per statistic for medians
    reliability: tuple[float, float] = neurons.RELIABILITY

    @property
    def video_trials(self) -> int:
        return self.train_trials + self.repeats * sum(self.repeated_stimuli.values())

    @property
    def static_trials(self) -> int:
        return self.static_train + self.repeats * sum(self.static_repeated.values())


def _repeated(oracle: int, live_main: int, live_bonus: int, final_main: int, final_bonus: int) -> dict[str, int]:
    counts = (oracle, live_main, live_bonus, final_main, final_bonus)
    return dict(zip(VIDEO_REPEATED_TIERS, counts))


PRESETS = {
    "tiny": Preset(
        name="tiny",
        mice=2,
        neurons=(120, 160),
        train_trials=40,
        frames=60,
        long_trials=2,
        max_frames=72,
        repeats=3,
        repeated_stimuli=_repeated(oracle=4, live_main=1, live_bonus=1, final_main=1, final_bonus=2),
        calibration_clips=3,
        static_train=40,
        static_repeated={"validation": 4, "test": 4, "final_test": 4},
        reliability=(9.0, 3.0),
    ),
    "small": Preset(
        name="small",
        mice=3,
        neurons=(100, 200),
        train_trials=60,
        frames=150,
        long_trials=6,
        max_frames=165,
        repeats=10,
        repeated_stimuli=_repeated(oracle=5, live_main=2, live_bonus=2, final_main=2, final_bonus=4),
        calibration_clips=4,
        static_train=2000,
        static_repeated={"validation": 20, "test": 20, "final_test": 20},
    ),
    "full": Preset(
        name="full",
        mice=10,
        neurons=(7440, 8285),
        train_trials=180,
        frames=300,
        long_trials=18,
        max_frames=320,
        repeats=10,
        repeated_stimuli=_repeated(oracle=6, live_main=6, live_bonus=6, final_main=6, final_bonus=12),
        calibration_clips=3,
        static_train=5000,
        static_repeated={"validation": 100, "test": 100, "final_test": 100},
        rates_dtype="float16",  # halves the ground truth on disk; correlations are unaffected
        median_samples=1024,  # 1024 x 8,000 neurons x 8 B = 65 MB
    ),
}


@dataclasses.dataclass(frozen=True)
class Trial:
    """One planned presentation."""

    tier: str
    stimulus: int  # index among the tier's distinct stimuli
    repeat: int
    stimulus_type: str
    stimulus_key: str  # names the stimulus; equal keys = identical stimulus
    length: int

    @property
    def stimulus_id(self) -> str:
        return hashlib.sha1(self.stimulus_key.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- seeds and plans


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, key)]))


def mouse_name(seed: int, index: int, static: bool = False) -> str:
    return f"{'static' if static else 'dynamic'}-synthetic-{seed}-{index}"


def neuron_count(preset: Preset, seed: int, index: int) -> int:
    """Depends on (seed, index) only; consecutive mice always differ when the range allows."""
    low, high = preset.neurons
    span = high - low + 1
    base = int(_rng(seed, 7).integers(0, span))
    return low + (base + index * (span // 2 + 1)) % span


def video_plan(preset: Preset, seed: int, index: int) -> list[Trial]:
    """All trials of a video mouse in presentation order (tiers interleaved, like a recording)."""
    rng = _rng(seed, index, 1)
    lengths = np.full(preset.train_trials, preset.frames)
    long = rng.choice(preset.train_trials, min(preset.long_trials, preset.train_trials), replace=False)
    lengths[long] = rng.integers(preset.frames + 1, preset.max_frames + 1, long.size)
    trials = [
        Trial("train", j, 0, "natural", f"{seed}/{index}/train/{j}", int(lengths[j]))
        for j in range(preset.train_trials)
    ]
    for tier, count in preset.repeated_stimuli.items():
        for j in range(count):
            kind = _ood_type(tier, j) if tier.endswith("bonus") else "natural"
            for r in range(preset.repeats):
                trials.append(Trial(tier, j, r, kind, f"{seed}/{tier}/{j}", preset.frames))
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


def _ood_type(tier: str, j: int) -> str:
    start = 0 if tier.startswith("live") else 3
    return stimuli.OOD_TYPES[(start + j) % len(stimuli.OOD_TYPES)]


def static_plan(preset: Preset, seed: int, index: int) -> list[Trial]:
    rng = _rng(seed, index, 1)
    trials = [Trial("train", j, 0, "natural", f"{seed}/{index}/image/{j}", 1) for j in range(preset.static_train)]
    for tier, count in preset.static_repeated.items():
        for j in range(count):
            for r in range(preset.repeats):
                trials.append(Trial(tier, j, r, "natural", f"{seed}/image/{tier}/{j}", 1))
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


def _stimulus_rng(seed: int, trial: Trial) -> np.random.Generator:
    digest = hashlib.sha1(trial.stimulus_key.encode()).digest()
    return _rng(seed, 2, int.from_bytes(digest[:8], "little"))


def _trial_rng(seed: int, index: int, trial: Trial) -> np.random.Generator:
    return _rng(seed, index, 3, TIER_CODES[trial.tier], trial.stimulus, trial.repeat)


def trial_video(seed: int, trial: Trial) -> np.ndarray:
    """[T, H, W] float32 frames of a planned trial (identical for repeats of one stimulus)."""
    return stimuli.make_clip(trial.stimulus_type, _stimulus_rng(seed, trial), trial.length)


# ----------------------------------------------------------------------------- the mouse


@dataclasses.dataclass
class Mouse:
    """One synthetic animal: its neurons, behaviour model and the calibrated noise."""

    name: str
    kind: str
    population: dict[str, np.ndarray]
    behavior_model: dict[str, Any]
    readout: neurons.SpatialReadout

    @property
    def n_neurons(self) -> int:
        return int(self.population["position"].shape[0])


def build_mouse(preset: Preset, seed: int, index: int, static: bool = False) -> Mouse:
    """Samples the population and calibrates drive normalization and noise on natural stimuli."""
    rng = _rng(seed, index, 0)
    population = neurons.sample_population(
        rng, neuron_count(preset, seed, index), preset.bank, reliability=preset.reliability
    )
    model = neurons.sample_mouse_behavior_model(rng)
    readout = neurons.SpatialReadout(preset.bank, population["position"], population["channel"])
    mouse = Mouse(mouse_name(seed, index, static), "static" if static else "video", population, model, readout)
    calibration = _rng(seed, index, 4)
    if static:
        _calibrate_static(mouse, calibration, max(128, min(512, preset.static_train)))
    else:
        _calibrate_video(mouse, calibration, preset.calibration_clips, preset.frames)
    return mouse


def _calibrate_video(mouse: Mouse, rng: np.random.Generator, n_clips: int, n_frames: int) -> None:
    """Drive statistics and noise scale from independent natural clips (behaviour included)."""
    p = mouse.population
    skip = neurons.KERNEL_LENGTH
    drives, gains = [], []
    for _ in range(n_clips):
        frames = stimuli.natural_clip(rng, n_frames)
        behavior, pupil_center = neurons.video_behavior(rng, n_frames, mouse.behavior_model)
        shift = neurons.eye_shift(pupil_center.T, mouse.behavior_model)
        z = neurons.temporal_filter(mouse.readout(frames, shift), p["temporal_kernel"])
        drives.append(neurons.drive(z, p)[skip:])
        gains.append(neurons.behavior_gain(behavior[0], behavior[1], p, mouse.behavior_model)[skip:])
    drive = np.concatenate(drives)
    p["drive_mean"] = _drive_mean(drive, p)
    p["drive_std"] = np.maximum(drive.std(0), 1e-6).astype(np.float32)
    rates = []
    for d, gain in zip(drives, gains):
        lam = gain * (neurons.stimulus_rate((d - p["drive_mean"]) / p["drive_std"], p) + p["baseline"])
        rates.append(neurons.calcium(lam, p["calcium_tau"], lam[0])[skip:])
    kept = neurons.calcium_noise_factor(p["calcium_tau"])
    p["noise_scale"] = _noise_scale(np.concatenate(rates), p["target_reliability"], kept)


def _calibrate_static(mouse: Mouse, rng: np.random.Generator, n_images: int) -> None:
    p = mouse.population
    images = np.stack([stimuli.natural_image(rng) for _ in range(n_images)])
    behavior, pupil_center = neurons.static_behavior(rng, n_images, mouse.behavior_model)
    drive = neurons.drive(mouse.readout(images, neurons.eye_shift(pupil_center, mouse.behavior_model)), p)
    p["drive_mean"] = _drive_mean(drive, p)
    p["drive_std"] = np.maximum(drive.std(0), 1e-6).astype(np.float32)
    rate = _static_rates(mouse, drive, behavior)
    p["noise_scale"] = _noise_scale(rate, p["target_reliability"], np.ones(mouse.n_neurons))


def _drive_mean(drive: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Complex cells: the mean amplitude; simple cells: 0 (their drive is signed, mean ~0),
    so a gray screen gives no stimulus drive at all (thresholds are >= 0)."""
    mean = drive.mean(0)
    mean[p["cell_type"] == neurons.SIMPLE] = 0
    return mean.astype(np.float32)


def _noise_scale(rate: np.ndarray, reliability: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Noise scale phi giving correlation ~`reliability` between rate and response.

    Response noise variance ~ phi * mean rate * kept (what the calcium smoothing keeps), so
    corr^2 = var(rate) / (var(rate) + phi * mean * kept).
    """
    mean = np.maximum(rate.mean(0).astype(np.float64), 1e-6)
    variance = np.maximum(rate.var(0).astype(np.float64), 1e-6 * mean**2)
    rho = reliability.astype(np.float64)
    return (variance * (1 / rho**2 - 1) / (mean * kept)).astype(np.float32)


def _static_rates(mouse: Mouse, drive: np.ndarray, behavior: np.ndarray) -> np.ndarray:
    p = mouse.population
    gain = neurons.behavior_gain(behavior[:, 0], behavior[:, 2], p, mouse.behavior_model)
    return gain * (neurons.stimulus_rate((drive - p["drive_mean"]) / p["drive_std"], p) + p["baseline"])


def simulate_video_trial(
    mouse: Mouse, frames: np.ndarray, behavior: np.ndarray, pupil_center: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(noise-free rate, noisy response), each [T, N] float32, for frames [T, H, W].

    behavior [2, T] (pupil, running) and pupil_center [2, T] in the on-disk orientation.
    """
    p = mouse.population
    shift = neurons.eye_shift(pupil_center.T, mouse.behavior_model)
    z = neurons.temporal_filter(mouse.readout(frames, shift), p["temporal_kernel"])
    u = (neurons.drive(z, p) - p["drive_mean"]) / p["drive_std"]
    gain = neurons.behavior_gain(behavior[0], behavior[1], p, mouse.behavior_model)
    lam = gain * (neurons.stimulus_rate(u, p) + p["baseline"])
    spikes = neurons.compound_poisson(rng, lam, p["noise_scale"])
    resting = gain[0] * p["baseline"]  # the gray screen before the trial
    both = neurons.calcium(np.concatenate([lam, spikes], 1), np.tile(p["calcium_tau"], 2), np.tile(resting, 2))
    n = mouse.n_neurons
    return both[:, :n], both[:, n:]


def simulate_static_trials(
    mouse: Mouse, images: np.ndarray, behavior: np.ndarray, pupil_center: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(rate, response) [B, N] for images [B, H, W], behavior [B, 3], pupil_center [B, 2]."""
    p = mouse.population
    shift = neurons.eye_shift(pupil_center, mouse.behavior_model)
    rate = _static_rates(mouse, neurons.drive(mouse.readout(images, shift), p), behavior)
    response = neurons.compound_poisson(rng, rate, p["noise_scale"])
    return rate.astype(np.float32), response


# ----------------------------------------------------------------------------- writing


def generate(
    out: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    mice: int | None = None,
    static: bool = False,
    progress: bool = True,
    verbose: bool = False,
) -> list[Path]:
    """Writes the mouse folders of a preset under `out`; returns their paths in mouse order."""
    if preset not in PRESETS:
        raise InputDataError("--preset", "preset", f"one of {', '.join(PRESETS)}", repr(preset))
    spec = PRESETS[preset]
    n_mice = spec.mice if mice is None else int(mice)
    if n_mice < 1:
        raise InputDataError("--mice", "mice", "a positive number of mice", n_mice)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputDataError(out, "--out", "a folder (or a path to create)", "a file")
    out.mkdir(parents=True, exist_ok=True)
    write = write_static_mouse if static else write_video_mouse
    paths = []
    for index in range(n_mice):
        started = time.perf_counter()
        path = write(out, spec, seed, index, progress)
        paths.append(path)
        if verbose:
            oracle = json.loads((path / GROUND_TRUTH / "oracle.json").read_text())
            print(f"{path}  ({time.perf_counter() - started:.1f} s)")
            print(format_oracle(oracle))
    return paths


def _fresh_folder(out: Path, name: str) -> tuple[Path, Path]:
    """(temporary, final): a mouse is written under a temporary name and renamed when
    complete, so a folder under its final name is never half-written. An earlier output of
    this generator is replaced; any other folder in the way is an error."""
    final = out / name
    temporary = out / (name + ".partial")
    if final.exists():
        if not (final / GROUND_TRUTH / "params.json").is_file():
            raise InputDataError(final, "output folder", "absent or written by this generator", "another folder")
        shutil.rmtree(final)
    if temporary.exists():
        shutil.rmtree(temporary)
    return temporary, final


@functools.lru_cache(maxsize=1)
def _openblas_threads() -> tuple[Any, Any] | None:
    """(get, set) of the OpenBLAS thread count numpy loaded, or None where not found."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    return get, put
    return None


@contextlib.contextmanager
def _one_blas_thread():
    """Runs with one BLAS thread: the per-trial products are small, OpenBLAS threads
    spin-waiting on a shared machine made them up to 6x slower (measured), and one thread
    keeps the sums' order, hence the bytes, independent of the machine's core count."""
    threads = _openblas_threads()
    if threads is None:
        yield
        return
    get, put = threads
    previous = get()
    put(1)
    try:
        yield
    finally:
        put(previous)


def _progress(total: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="trial", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def write_video_mouse(out: Path, preset: Preset, seed: int, index: int, progress: bool = True) -> Path:
    """Generates and writes one video (2023-format) mouse folder."""
    name = mouse_name(seed, index)
    temporary, final = _fresh_folder(out, name)
    with _one_blas_thread():
        mouse = build_mouse(preset, seed, index)
    plan = video_plan(preset, seed, index)
    padded = max(trial.length for trial in plan)
    writer = MouseFolderWriter(temporary, "video", padded_length=padded, median_samples=preset.median_samples)
    rates_dir = temporary / GROUND_TRUTH / "rates"
    rates_dir.mkdir(parents=True)
    dtype = np.dtype(preset.rates_dtype)
    with _progress(len(plan), name, progress) as bar, _one_blas_thread():
        for trial in plan:
            frames = trial_video(seed, trial)
            rng = _trial_rng(seed, index, trial)
            behavior, pupil_center = neurons.video_behavior(rng, trial.length, mouse.behavior_model)
            rate, response = simulate_video_trial(mouse, frames, behavior, pupil_center, rng)
            i = writer.add_trial(
                frames.transpose(1, 2, 0), response.T, behavior, pupil_center, trial.tier, trial.stimulus_id
            )
            pad = ((0, 0), (0, padded - trial.length))
            np.save(rates_dir / f"{i}.npy", np.pad(rate.T, pad, constant_values=np.nan).astype(dtype))
            bar.update()
    return _finish(writer, mouse, preset, seed, index, plan, temporary, final, padded)


def write_static_mouse(out: Path, preset: Preset, seed: int, index: int, progress: bool = True) -> Path:
    """Generates and writes one static (2022-format) mouse folder."""
    name = mouse_name(seed, index, static=True)
    temporary, final = _fresh_folder(out, name)
    with _one_blas_thread():
        mouse = build_mouse(preset, seed, index, static=True)
    plan = static_plan(preset, seed, index)
    writer = MouseFolderWriter(temporary, "static", median_samples=preset.median_samples)
    rates_dir = temporary / GROUND_TRUTH / "rates"
    rates_dir.mkdir(parents=True)
    behavior, pupil_center = neurons.static_behavior(_rng(seed, index, 5), len(plan), mouse.behavior_model)
    dtype = np.dtype(preset.rates_dtype)
    with _progress(len(plan), name, progress) as bar, _one_blas_thread():
        for start in range(0, len(plan), STATIC_BATCH):
            batch = plan[start : start + STATIC_BATCH]
            images = np.stack([stimuli.natural_image(_stimulus_rng(seed, trial)) for trial in batch])
            rows = slice(start, start + len(batch))
            rng = _rng(seed, index, 6, start)
            rate, response = simulate_static_trials(mouse, images, behavior[rows], pupil_center[rows], rng)
            for b, trial in enumerate(batch):
                j = start + b
                i = writer.add_trial(
                    images[b][None], response[b], behavior[j], pupil_center[j], trial.tier, trial.stimulus_id
                )
                np.save(rates_dir / f"{i}.npy", rate[b].astype(dtype))
            bar.update(len(batch))
    return _finish(writer, mouse, preset, seed, index, plan, temporary, final, 1)


def _finish(
    writer: MouseFolderWriter,
    mouse: Mouse,
    preset: Preset,
    seed: int,
    index: int,
    plan: list[Trial],
    temporary: Path,
    final: Path,
    padded: int,
) -> Path:
    """Official metadata, ground truth and the oracle ceiling; then the atomic rename."""
    p = mouse.population
    writer.finish(np.arange(1, mouse.n_neurons + 1), p["coordinates"])
    truth = temporary / GROUND_TRUTH
    np.savez(truth / "receptive_fields.npz", cell_type_names=np.asarray(neurons.CELL_TYPES), **p)
    trials = [
        {
            "trial": i,
            "tier": t.tier,
            "stimulus_id": t.stimulus_id,
            "stimulus_type": t.stimulus_type,
            "stimulus": t.stimulus,
            "repeat": t.repeat,
            "length": t.length,
        }
        for i, t in enumerate(plan)
    ]
    (truth / "trials.json").write_text(json.dumps(trials, indent=0))
    (truth / "params.json").write_text(json.dumps(_params(mouse, preset, seed, index, plan, padded), indent=2))
    oracle = oracle_ceiling(temporary)
    (truth / "oracle.json").write_text(json.dumps(oracle, indent=2))
    temporary.rename(final)
    return final


def _params(mouse: Mouse, preset: Preset, seed: int, index: int, plan: list[Trial], padded: int) -> dict[str, Any]:
    tiers: dict[str, dict[str, int]] = {}
    for trial in plan:
        entry = tiers.setdefault(trial.tier, {"trials": 0, "stimuli": 0})
        entry["trials"] += 1
        entry["stimuli"] = max(entry["stimuli"], trial.stimulus + 1)
    return {
        "generator": "sensorium_jax.data.synthetic",
        "format_version": 1,
        "name": mouse.name,
        "kind": mouse.kind,
        "preset": preset.name,
        "seed": seed,
        "mouse_index": index,
        "n_neurons": mouse.n_neurons,
        "frame_shape": list(stimuli.FRAME_SHAPE),
        "fps": stimuli.FPS,
        "padded_length": padded,
        "tiers": tiers,
        "repeats": preset.repeats,
        "rates_dtype": preset.rates_dtype,
        "filter_bank": preset.bank.as_dict(),
        "behavior_model": mouse.behavior_model,
        "burn_in": default_burn_in(mouse.kind, min(t.length for t in plan)),
        "model": {
            "stimulus": "s = (frame - frame mean) / 128, zero outside the screen",
            "spatial": "c_n(t) = bilinear readout at position_n + eye_shift(t) of the complex Gabor channel "
            "sum_x s(x) env(x - p) (exp(-2 pi i f.(x - p)) - kappa), env = Gaussian(sigma) / (2 pi sigma^2)",
            "eye_shift": "eye_to_screen @ (pupil_center - pupil_center_mean), pixels (dx, dy)",
            "temporal": "z_n = causal FIR of c_n with temporal_kernel (video only)",
            "drive": "simple: Re(exp(-i phase) z); complex: |z|; u = (drive - drive_mean) / drive_std "
            "(drive_mean = 0 for simple cells: a gray screen drives nothing)",
            "nonlinearity": "amplitude * max(u - threshold, 0) ** exponent",
            "gain": "exp(beta_running * running / running_max + beta_pupil * log(pupil / pupil_mean) / pupil_log_std)",
            "spike_rate": "lambda = gain * (nonlinearity + baseline)",
            "rate": "video: calcium(lambda), y_t = a y_(t-1) + (1 - a) x_t, a = exp(-1 / calcium_tau); static: lambda",
            "noise": "spikes = sum of Poisson(2 lambda / noise_scale) events of Exp(noise_scale / 2) size "
            "(mean lambda, variance noise_scale * lambda); video response = calcium(spikes), static: spikes",
        },
    }


# ----------------------------------------------------------------------------- oracle ceiling


def default_burn_in(kind: str, shortest: int) -> int:
    """The SENSORIUM 50 frames where trials keep at least as many; else a quarter (tiny)."""
    if kind == "static":
        return 0
    return BURN_IN if shortest >= 2 * BURN_IN else shortest // 4


class _Pearson:
    """Per-neuron Pearson correlation accumulated over frames in float64 (shifted sums)."""

    def __init__(self) -> None:
        self.n = 0
        self.shift: tuple[np.ndarray, np.ndarray] | None = None
        self.sums = None

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """x, y: [N, frames] float64."""
        if x.shape[1] == 0:
            return
        if self.shift is None:
            self.shift = (x.mean(1, keepdims=True), y.mean(1, keepdims=True))
            self.sums = [np.zeros(x.shape[0]) for _ in range(5)]
        x = x - self.shift[0]
        y = y - self.shift[1]
        for total, value in zip(self.sums, (x, y, x * x, y * y, x * y)):
            total += value.sum(1)
        self.n += x.shape[1]

    def correlation(self) -> np.ndarray:
        if self.sums is None or self.n < 2:
            return np.zeros(0)
        sx, sy, sxx, syy, sxy = self.sums
        n = self.n
        cov = sxy - sx * sy / n
        vx = sxx - sx**2 / n
        vy = syy - sy**2 / n
        denominator = np.sqrt(np.maximum(vx, 0) * np.maximum(vy, 0))
        return np.where(denominator > 0, cov / np.where(denominator > 0, denominator, 1), 0.0)


def _read_trial(folder: Path, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(rate, response) of trial i as float64 [N, T] (static: [N, 1]), padding included."""
    rate = np.load(folder / GROUND_TRUTH / "rates" / f"{i}.npy").astype(np.float64)
    response = np.load(folder / "data" / "responses" / f"{i}.npy").astype(np.float64)
    return rate.reshape(rate.shape[0], -1), response.reshape(response.shape[0], -1)


def _length(response: np.ndarray) -> int:
    """Valid frames: the index of the first NaN (padding covers all neurons alike)."""
    row = np.asarray(response[0]).reshape(-1)  # static responses (N,): one frame
    nan = np.isnan(row)
    return int(np.argmax(nan)) if nan.any() else row.shape[0]


def _tier_burn_in(folder: Path, kind: str, indices: np.ndarray) -> int:
    if kind == "static":
        return 0
    responses = folder / "data" / "responses"
    shortest = min(_length(np.load(responses / f"{i}.npy", mmap_mode="r")) for i in indices)
    return default_burn_in(kind, shortest)


def oracle_ceiling(
    folder: str | Path, tiers: list[str] | tuple[str, ...] | None = None, burn_in: int | None = None
) -> dict[str, dict[str, float]]:
    """The best scores any model can reach: the noise-free rate scored as a prediction.

    Per tier, mean over neurons of the SENSORIUM metrics with the rate as the prediction:
    `single_trial_correlation` (Pearson per neuron over all frames of all trials after
    `burn_in` frames per trial) and `correlation_to_average` (responses and rates first
    averaged over the repeats of each stimulus, frame by frame). Neurons with constant
    values count as 0. Default tiers: every tier with repeated stimuli; default burn-in:
    `default_burn_in` (50 frames, a quarter of the shortest trial when shorter than 100
    frames, 0 for static images). Reads one stimulus' repeats at a time (float64), so
    memory stays bounded.
    """
    folder = Path(folder)
    kind = "video" if (folder / "data" / "videos").is_dir() else "static"
    all_tiers = np.load(folder / "meta" / "trials" / "tiers.npy").astype(str)
    id_file = "condition_hash.npy" if kind == "video" else "frame_image_id.npy"
    stimulus_ids = np.load(folder / "meta" / "trials" / id_file).astype(str)
    if tiers is None:
        repeated = VIDEO_REPEATED_TIERS if kind == "video" else STATIC_REPEATED_TIERS
        tiers = [tier for tier in repeated if tier in set(all_tiers)]
    result = {}
    for tier in tiers:
        indices = np.flatnonzero(all_tiers == tier)
        if indices.size == 0:
            continue
        groups: dict[str, list[int]] = {}
        for i in indices:
            groups.setdefault(stimulus_ids[i], []).append(int(i))
        single, average = _Pearson(), _Pearson()
        skip = _tier_burn_in(folder, kind, indices) if burn_in is None else int(burn_in)
        responses = folder / "data" / "responses"
        for members in groups.values():
            common = min(_length(np.load(responses / f"{i}.npy", mmap_mode="r")) for i in members)
            sum_rate = sum_response = 0.0
            for i in members:  # one trial in memory at a time
                rate, response = _read_trial(folder, i)
                length = _length(response)
                single.update(rate[:, skip:length], response[:, skip:length])
                sum_rate = sum_rate + rate[:, skip:common]
                sum_response = sum_response + response[:, skip:common]
            average.update(sum_rate / len(members), sum_response / len(members))
        result[tier] = {
            "single_trial_correlation": float(np.mean(single.correlation())),
            "correlation_to_average": float(np.mean(average.correlation())),
            "trials": int(indices.size),
            "stimuli": len(groups),
            "burn_in": skip,
        }
    return result


def format_oracle(oracle: dict[str, dict[str, float]]) -> str:
    lines = [f"  {'tier':18s} {'single-trial':>12s} {'to-average':>11s}  trials"]
    for tier, entry in oracle.items():
        single, average = entry["single_trial_correlation"], entry["correlation_to_average"]
        lines.append(f"  {tier:18s} {single:12.3f} {average:11.3f}  {entry['trials']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        prog="python -m sensorium_jax.data.synthetic",
        description="Write synthetic SENSORIUM mouse folders (2023 video, or 2022 static with --static).",
    )
    parser.add_argument("--out", required=True, help="folder that receives one subfolder per mouse")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--mice", type=int, default=None, help="number of mice (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--static", action="store_true", help="2022 static-image format")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    return generate(
        args.out, args.preset, args.seed, args.mice, args.static, progress=not args.no_progress, verbose=True
    )


if __name__ == "__main__":
    run_cli(main)
