"""The oracle ceiling: the noise-free rate scored as a prediction, the best any model can do.

Reads a written synthetic folder (official files plus `ground_truth/rates`), one stimulus'
repeats at a time in float64, so memory stays bounded whatever the folder size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sensorium_jax.data.kinds import STATIC, STIMULUS_TYPE_FILE, VIDEO, DatasetKind, as_kind
from sensorium_jax.data.synthetic.correlation import PearsonAccumulator

GROUND_TRUTH = "ground_truth"


def default_burn_in(kind: DatasetKind | str, shortest: int) -> int:
    """The SENSORIUM 50 frames where trials keep at least twice as many; else a quarter
    of the shortest trial (tiny data); 0 for static images."""
    burn_in = as_kind(kind).burn_in
    if burn_in == 0:
        return 0
    return burn_in if shortest >= 2 * burn_in else shortest // 4


def read_rate_and_response(folder: Path, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(rate, response) of trial i as float64 [N, T] (static: [N, 1]), padding included."""
    rate = np.load(folder / GROUND_TRUTH / "rates" / f"{i}.npy").astype(np.float64)
    response = np.load(folder / "data" / "responses" / f"{i}.npy").astype(np.float64)
    return rate.reshape(rate.shape[0], -1), response.reshape(response.shape[0], -1)


def _length(response: np.ndarray) -> int:
    """Valid frames: the index of the first NaN (padding covers all neurons alike)."""
    row = np.asarray(response[0]).reshape(-1)  # static responses (N,): one frame
    nan = np.isnan(row)
    return int(np.argmax(nan)) if nan.any() else row.shape[0]


def _response_length(folder: Path, i: int) -> int:
    return _length(np.load(folder / "data" / "responses" / f"{i}.npy", mmap_mode="r"))


def _scores(folder: Path, indices: np.ndarray, stimulus_ids: np.ndarray, skip: int) -> dict[str, float]:
    """Both SENSORIUM correlations of the rate against the responses of these trials."""
    groups: dict[str, list[int]] = {}
    for i in indices:
        groups.setdefault(stimulus_ids[i], []).append(int(i))
    single, average = PearsonAccumulator(), PearsonAccumulator()
    for members in groups.values():
        # Frame by frame over the repeats that have the frame (the definition
        # `sensorium_jax.metrics.correlation_to_average` scores models with): repeats of unequal
        # length all count, none is cut to the shortest.
        frames = max(max(_response_length(folder, i) for i in members) - skip, 0)
        sum_rate, sum_response, count = 0.0, 0.0, np.zeros(frames)
        for i in members:  # one trial in memory at a time
            rate, response = read_rate_and_response(folder, i)
            length = _length(response)
            single.update(rate[:, skip:length], response[:, skip:length])
            kept = max(length - skip, 0)
            pad = ((0, 0), (0, frames - kept))
            sum_rate = sum_rate + np.pad(rate[:, skip:length], pad)
            sum_response = sum_response + np.pad(response[:, skip:length], pad)
            count[:kept] += 1
        if frames:
            average.update(sum_rate / count, sum_response / count)
    return {
        "single_trial_correlation": float(np.mean(single.correlation())),
        "correlation_to_average": float(np.mean(average.correlation())),
        "trials": int(indices.size),
        "stimuli": len(groups),
    }


def oracle_ceiling(
    folder: str | Path, tiers: Sequence[str] | None = None, burn_in: int | None = None
) -> dict[str, dict]:
    """The best scores any model can reach: the noise-free rate scored as a prediction.

    Per tier, mean over neurons of the SENSORIUM metrics with the rate as the prediction:
    `single_trial_correlation` (Pearson per neuron over all frames of all trials after
    `burn_in` frames per trial) and `correlation_to_average` (responses and rates first
    averaged over the repeats of each stimulus, frame by frame). Neurons with constant
    values count as 0. Default tiers: every tier with repeated stimuli; default burn-in:
    `default_burn_in`. Bonus tiers of folders that list stimulus types also get
    `per_stimulus_type: {type: {metric: value, ...}}`.
    """
    folder = Path(folder)
    kind = VIDEO if (folder / "data" / "videos").is_dir() else STATIC
    trials = folder / "meta" / "trials"
    all_tiers = np.load(trials / "tiers.npy").astype(str)
    stimulus_ids = np.load(trials / kind.stimulus_id_file).astype(str)
    types = np.load(trials / STIMULUS_TYPE_FILE).astype(str) if (trials / STIMULUS_TYPE_FILE).exists() else None
    if tiers is None:
        tiers = [tier for tier in kind.repeated_tiers if tier in set(all_tiers)]
    result: dict[str, dict] = {}
    for tier in tiers:
        indices = np.flatnonzero(all_tiers == tier)
        if indices.size == 0:
            continue
        if burn_in is None:
            skip = default_burn_in(kind, min(_response_length(folder, i) for i in indices))
        else:
            skip = int(burn_in)
        entry: dict = {**_scores(folder, indices, stimulus_ids, skip), "burn_in": skip}
        if tier in kind.bonus_tiers and types is not None:
            entry["per_stimulus_type"] = {
                name: _scores(folder, indices[types[indices] == name], stimulus_ids, skip)
                for name in sorted(set(types[indices].tolist()))
            }
        result[tier] = entry
    return result


def format_oracle(oracle: dict[str, dict]) -> str:
    """The ceiling as a small table for the terminal."""
    lines = [f"  {'tier':18s} {'single-trial':>12s} {'to-average':>11s}  trials"]
    for tier, entry in oracle.items():
        single, average = entry["single_trial_correlation"], entry["correlation_to_average"]
        lines.append(f"  {tier:18s} {single:12.3f} {average:11.3f}  {entry['trials']}")
    return "\n".join(lines)
