"""Cross-validation folds over labelled trials, grouped by stimulus (DwiseNeuro's data regime).

The first-place solution trained 7 models, each validated on one fold of all labelled trials
and trained on the other six: trials are assigned by a hash of their video, so repeats of one
stimulus always land in the same fold and a model never validates on a video it trained on.
Here the stimulus id (the store's condition hash or stimulus key) plays the video hash's role.

Pure and deterministic: the fold depends only on the stimulus id and the number of folds (a
fixed cryptographic hash, not Python's salted `hash`), so every process, run and machine agrees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

DEFAULT_FOLDS = 7


def stimulus_fold(stimulus_id: object, n_folds: int = DEFAULT_FOLDS) -> int:
    """The fold of every trial showing `stimulus_id`: its (string form's) BLAKE2b hash mod n_folds."""
    if n_folds < 1:
        raise ValueError(f"the number of folds must be positive, got {n_folds}")
    digest = hashlib.blake2b(str(stimulus_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % int(n_folds)


def assign_folds(trial_ids: Sequence, stimulus_ids: Sequence, n_folds: int = DEFAULT_FOLDS) -> np.ndarray:
    """int32 [trials]: the fold of each trial (aligned with `trial_ids`), the same for all trials
    of one stimulus id."""
    trials, stimuli = np.asarray(trial_ids), np.asarray(stimulus_ids)
    if trials.shape != stimuli.shape or trials.ndim != 1:
        raise ValueError(f"one stimulus id per trial: {trials.shape} trial ids, {stimuli.shape} stimulus ids")
    if len(np.unique(trials)) != len(trials):
        raise ValueError("trial ids must be unique")
    folds = {s: stimulus_fold(s, n_folds) for s in dict.fromkeys(stimuli.tolist())}
    return np.asarray([folds[s] for s in stimuli.tolist()], np.int32)


def fold_split(folds: np.ndarray, fold: int, n_folds: int = DEFAULT_FOLDS) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) boolean masks over trials: validation is fold `fold`, training the rest."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in [0, {n_folds}), got {fold}")
    validation = np.asarray(folds) == fold
    return ~validation, validation


def fold_tiers(tiers: Sequence[str], stimulus_ids: Sequence, labelled: Sequence[str],
               n_folds: int = DEFAULT_FOLDS) -> np.ndarray:
    """str [trials]: the trials of the `labelled` tiers renamed "fold_0" .. "fold_{n-1}" by their
    stimulus, every other trial keeping its tier (the reference's layout: fold k validates,
    the other folds train)."""
    tiers = np.asarray(tiers).astype(str)
    chosen = np.isin(tiers, np.asarray(labelled, str))
    out = tiers.astype(object)
    folds = assign_folds(np.flatnonzero(chosen), np.asarray(stimulus_ids)[chosen], n_folds)
    out[chosen] = [f"fold_{f}" for f in folds]
    return out.astype(str)


def fold_train_tiers(fold: int, n_folds: int = DEFAULT_FOLDS) -> tuple[str, ...]:
    """The tiers that train the model validated on fold `fold`: every other fold."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in [0, {n_folds}), got {fold}")
    return tuple(f"fold_{k}" for k in range(n_folds) if k != fold)


def uses_folds(data) -> bool:
    """Whether `config.data` asks for a cross-validation fold (`data.fold` >= 0)."""
    return int(data.get("fold", -1)) >= 0


def stored_training_tiers(data) -> tuple[str, ...]:
    """The tiers, as the store names them, whose trials trained a run of `config.data`: a fold
    run's labelled tiers (all but its own fold's trials of them), else its training tiers."""
    if uses_folds(data):
        return tuple(data.get("fold_tiers", ("train", "oracle")))
    return tuple(data.get("train_tiers", ("train",)))


def with_fold_tiers(config):
    """`config` with `data.train_tiers` / `data.validation_tier` set from `data.fold` (itself
    when no fold is asked for): the tiers a store opened with folds calls its trials."""
    data = config.data
    if not uses_folds(data):
        return config
    config = config.copy_and_resolve_references()
    fold, n_folds = int(data.fold), int(data.get("n_folds", DEFAULT_FOLDS))
    config.data.train_tiers = fold_train_tiers(fold, n_folds)
    config.data.validation_tier = f"fold_{fold}"
    return config
