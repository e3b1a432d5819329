"""Writes synthetic mouse folders: official files through `MouseFolderWriter`, plus ground truth.

Each mouse is written trial by trial (memory bounded by one trial) under a temporary name and
renamed when complete. Next to the official files, `ground_truth/` (ignored by official
readers) holds:

    ground_truth/params.json            the model, its constants and the tier layout
    ground_truth/receptive_fields.npz   per-neuron parameters (RF position in pixels, cell
                                        type, filter, latency, kernels, gains, noise)
    ground_truth/trials.json            per trial: tier, stimulus id and type, length, repeat
    ground_truth/rates/<i>.npy          noise-free rate of trial i, laid out like responses
    ground_truth/oracle.json            the oracle ceiling per repeated tier (bonus tiers
                                        also per stimulus type)
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sensorium_jax.data.folder_writer import MouseFolderWriter
from sensorium_jax.data.kinds import STATIC, VIDEO
from sensorium_jax.data.statistics import LAYOUTS, PER_FRAME
from sensorium_jax.data.synthetic import neurons, stimuli
from sensorium_jax.data.synthetic.oracle import GROUND_TRUTH, default_burn_in, format_oracle, oracle_ceiling
from sensorium_jax.data.synthetic.plan import (
    Trial,
    mouse_name,
    rng_for,
    static_plan,
    stimulus_rng,
    trial_rng,
    trial_video,
    video_plan,
)
from sensorium_jax.data.synthetic.presets import PRESETS, Preset
from sensorium_jax.data.synthetic.simulate import Mouse, build_mouse, simulate_static_trials, simulate_video_trial
from sensorium_jax.data.synthetic.threads import one_blas_thread
from sensorium_jax.errors import InputDataError

STATIC_BATCH = 256  # images simulated together


def generate(
    out: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    mice: int | None = None,
    static: bool = False,
    progress: bool = True,
    verbose: bool = False,
    statistics: str = PER_FRAME,
) -> list[Path]:
    """Writes the mouse folders of a preset under `out`; returns their paths in mouse order.

    `statistics`: the layout of video folders' meta/statistics, "per_frame" like the 2023
    release or "per_neuron" like older folders (static folders are always per neuron).
    """
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
    if statistics not in LAYOUTS:
        raise InputDataError("--statistics", "statistics", f"one of {', '.join(LAYOUTS)}", repr(statistics))
    paths = []
    for index in range(n_mice):
        started = time.perf_counter()
        if static:
            path = write_static_mouse(out, spec, seed, index, progress)
        else:
            path = write_video_mouse(out, spec, seed, index, progress, statistics=statistics)
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


def _progress(total: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="trial", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def write_video_mouse(
    out: Path, preset: Preset, seed: int, index: int, progress: bool = True, statistics: str = PER_FRAME
) -> Path:
    """Generates and writes one video (2023-format) mouse folder; each trial's stimulus type
    goes to meta/trials/stimulus_type.npy."""
    name = mouse_name(seed, index)
    temporary, final = _fresh_folder(out, name)
    with one_blas_thread():
        mouse = build_mouse(preset, seed, index)
    plan = video_plan(preset, seed, index)
    padded = max(trial.length for trial in plan)
    writer = MouseFolderWriter(temporary, VIDEO.name, padded_length=padded, median_samples=preset.median_samples,
                               statistics=statistics)
    rates_dir = temporary / GROUND_TRUTH / "rates"
    rates_dir.mkdir(parents=True)
    dtype = np.dtype(preset.rates_dtype)
    with _progress(len(plan), name, progress) as bar, one_blas_thread():
        for trial in plan:
            frames = trial_video(seed, trial)
            rng = trial_rng(seed, index, trial)
            behavior, pupil_center = neurons.video_behavior(rng, trial.length, mouse.behavior_model)
            rate, response = simulate_video_trial(mouse, frames, behavior, pupil_center, rng)
            i = writer.add_trial(
                frames.transpose(1, 2, 0), response.T, behavior, pupil_center, trial.tier, trial.stimulus_id,
                stimulus_type=trial.stimulus_type,
            )
            pad = ((0, 0), (0, padded - trial.length))
            np.save(rates_dir / f"{i}.npy", np.pad(rate.T, pad, constant_values=np.nan).astype(dtype))
            bar.update()
    return _finish(writer, mouse, preset, seed, index, plan, temporary, final, padded)


def write_static_mouse(out: Path, preset: Preset, seed: int, index: int, progress: bool = True) -> Path:
    """Generates and writes one static (2022-format) mouse folder."""
    name = mouse_name(seed, index, static=True)
    temporary, final = _fresh_folder(out, name)
    with one_blas_thread():
        mouse = build_mouse(preset, seed, index, static=True)
    plan = static_plan(preset, seed, index)
    writer = MouseFolderWriter(temporary, STATIC.name, median_samples=preset.median_samples)
    rates_dir = temporary / GROUND_TRUTH / "rates"
    rates_dir.mkdir(parents=True)
    behavior, pupil_center = neurons.static_behavior(rng_for(seed, index, 5), len(plan), mouse.behavior_model)
    dtype = np.dtype(preset.rates_dtype)
    with _progress(len(plan), name, progress) as bar, one_blas_thread():
        for start in range(0, len(plan), STATIC_BATCH):
            batch = plan[start : start + STATIC_BATCH]
            images = np.stack([stimuli.natural_image(stimulus_rng(seed, trial)) for trial in batch])
            rows = slice(start, start + len(batch))
            rng = rng_for(seed, index, 6, start)
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
    (truth / "params.json").write_text(json.dumps(_params(mouse, preset, seed, index, plan, padded, writer.statistics_layout), indent=2))
    oracle = oracle_ceiling(temporary)
    (truth / "oracle.json").write_text(json.dumps(oracle, indent=2))
    temporary.rename(final)
    return final


def _params(
    mouse: Mouse, preset: Preset, seed: int, index: int, plan: list[Trial], padded: int, statistics_layout: str
) -> dict[str, Any]:
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
        "statistics_layout": statistics_layout,
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
