"""Folds grouped by stimulus: deterministic, repeats of a stimulus together, roughly balanced."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from sensorium_jax.data.folds import assign_folds, fold_split, fold_tiers, fold_train_tiers, stimulus_fold


def test_fold_is_the_stimulus_hash_mod_the_number_of_folds():
    for stimulus in ("a3f9c0", 17, "clip_0042"):
        digest = hashlib.blake2b(str(stimulus).encode(), digest_size=8).digest()
        assert stimulus_fold(stimulus, 7) == int.from_bytes(digest, "little") % 7
    assert stimulus_fold(np.int64(17), 7) == stimulus_fold(17, 7)  # NumPy or Python ids agree


def test_repeats_share_a_fold_and_the_assignment_is_deterministic():
    rng = np.random.default_rng(0)
    stimuli = rng.choice([f"video{i}" for i in range(60)], size=400)
    trials = rng.permutation(1000)[:400]
    folds = assign_folds(trials, stimuli)
    assert folds.dtype == np.int32 and folds.shape == (400,) and set(folds.tolist()) <= set(range(7))
    for stimulus in np.unique(stimuli):
        assert len(set(folds[stimuli == stimulus].tolist())) == 1
    np.testing.assert_array_equal(assign_folds(trials, stimuli), folds)
    order = rng.permutation(400)  # the fold is the trial's, not its position's
    np.testing.assert_array_equal(assign_folds(trials[order], stimuli[order]), folds[order])
    counts = np.bincount(assign_folds(np.arange(7000), np.arange(7000)), minlength=7)
    assert counts.min() > 850 and counts.max() < 1150  # ~1000 each


def test_fold_split_and_refusals():
    folds = np.array([0, 3, 3, 6, 1])
    train, validation = fold_split(folds, 3)
    np.testing.assert_array_equal(validation, [False, True, True, False, False])
    np.testing.assert_array_equal(train, ~validation)
    with pytest.raises(ValueError, match="fold must be"):
        fold_split(folds, 7)
    with pytest.raises(ValueError, match="one stimulus id per trial"):
        assign_folds([1, 2, 3], ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        assign_folds([1, 1], ["a", "b"])
    with pytest.raises(ValueError, match="positive"):
        stimulus_fold("a", 0)


def test_fold_tiers_rename_only_the_labelled_trials():
    tiers = ["train", "oracle", "live_test_main", "train", "none", "oracle"]
    stimuli = [5, 9, 5, 9, 5, 11]
    out = fold_tiers(tiers, stimuli, labelled=("train", "oracle"))
    expected = [f"fold_{stimulus_fold(s, 7)}" if t in ("train", "oracle") else t for t, s in zip(tiers, stimuli)]
    assert out.tolist() == expected
    assert out[1] == out[3]  # the same video in training and oracle trials: one fold
    assert fold_train_tiers(2, 4) == ("fold_0", "fold_1", "fold_3")
    with pytest.raises(ValueError):
        fold_train_tiers(4, 4)


def test_a_fold_run_trains_on_the_other_folds_and_validates_on_its_own(tiny_store):
    import ml_collections

    from sensorium_jax.config import base_config
    from sensorium_jax.data.datasets import open_training_store
    from sensorium_jax.data.folds import with_fold_tiers

    config = base_config()
    config.data.store = str(tiny_store)
    config.data.fold, config.data.n_folds = 2, 3
    resolved = with_fold_tiers(config)
    assert tuple(resolved.data.train_tiers) == ("fold_0", "fold_1") and resolved.data.validation_tier == "fold_2"
    assert config.data.validation_tier == "oracle"  # the caller's config is left alone
    folded = open_training_store(resolved.data)
    stored = open_training_store(resolved.data, folds=False)
    for mouse in stored.mice:
        before, after = stored.meta(mouse), folded.meta(mouse)
        labelled = np.isin(before.tiers, ("train", "oracle"))
        np.testing.assert_array_equal(after.tiers[~labelled], before.tiers[~labelled])  # test tiers kept
        assert set(after.tiers[labelled]) == {"fold_0", "fold_1", "fold_2"}
        for stimulus in np.unique(before.stimulus_ids[labelled]):  # repeats never straddle folds
            assert len(set(after.tiers[labelled & (before.stimulus_ids == stimulus)])) == 1
        train, validation = after.trials_of(resolved.data.train_tiers), after.trials_of("fold_2")
        assert len(train) and len(validation) and not set(train) & set(validation)
        assert len(train) + len(validation) == labelled.sum()
    assert with_fold_tiers(base_config()).data.train_tiers == ("train",)  # no fold: as stored
    assert isinstance(resolved, ml_collections.ConfigDict)


def test_train_py_with_a_fold_trains_on_the_other_folds(tiny_store, tmp_path):
    """`--config.data.fold=k` alone (as the README says) must reach the trainer's tiers."""
    import json

    from sensorium_jax.training.loop import train_and_evaluate
    from toy_config import get_config

    config = get_config()
    config.data.store = str(tiny_store)
    config.data.fold, config.data.n_folds = 1, 3
    config.train.steps, config.train.eval_every = 2, 2
    summary = train_and_evaluate(config, tmp_path / "fold1")
    written = json.loads((tmp_path / "fold1" / "config.json").read_text())
    assert written["data"]["train_tiers"] == ["fold_0", "fold_2"] and written["data"]["validation_tier"] == "fold_1"
    assert np.isfinite(summary.best_validation_correlation)
