"""The static-image track (SENSORIUM 2022) end to end: a toy model trained on the tiny static
preset is scored by evaluate.py (scores equal NumPy references of the 2022 definitions), writes
the 2022 submission CSVs, and `load(...).predict` on images equals the trainer's predictions."""

from __future__ import annotations

import csv
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

import sensorium_jax
from sensorium_jax.config import load_config
from sensorium_jax.data.datasets import open_training_store
from sensorium_jax.data.pipeline import make_eval_batches
from sensorium_jax.errors import InputDataError
from sensorium_jax.evaluation import scoring
from sensorium_jax.evaluation.evaluators import get_evaluators
from sensorium_jax.evaluation.submission_static import COLUMNS, STATIC_SUBMISSION_TIERS, submission_track
from sensorium_jax.inference.inputs import images_as_trials
from sensorium_jax.models import build_model, default_model_config

REPO = Path(__file__).resolve().parents[1]
TIERS = ("validation", "test", "final_test")
FEV_THRESHOLD = 0.15  # the 2022 rule: FEVE is averaged over neurons with FEV >= 0.15


# ----------------------------------------------------------------------------- NumPy references (2022)


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column Pearson of [rows, N] in float64; zero variance gives 0."""
    x, y = x - x.mean(0), y - y.mean(0)
    denominator = np.sqrt((x * x).sum(0) * (y * y).sum(0))
    return np.where(denominator > 0, (x * y).sum(0) / np.where(denominator > 0, denominator, 1), 0.0)


def by_image(values: np.ndarray, image_ids: np.ndarray) -> list[np.ndarray]:
    """[trials, N] split into the repeats of each image id ([repeats, N] each)."""
    return [values[image_ids == i] for i in np.unique(image_ids)]


def ref_fev_feve(responses: np.ndarray, predictions: np.ndarray, image_ids: np.ndarray):
    """FEV and FEVE per neuron as the 2022 competition computed them (neuralpredictors `fev`):
    noise variance = mean over images of the variance across repeats (ddof 1), total variance =
    variance of all single trials (ddof 1), FEV = 1 - noise / total, FEVE = 1 - (MSE - noise) /
    (total - noise). Over images shown at least twice (every test image is)."""
    targets = [t for t in by_image(responses, image_ids) if len(t) >= 2]
    outputs = [p for t, p in zip(by_image(responses, image_ids), by_image(predictions, image_ids)) if len(t) >= 2]
    noise = np.mean([np.var(t, axis=0, ddof=1) for t in targets], axis=0)
    total = np.var(np.vstack(targets), axis=0, ddof=1)
    mse = np.mean(np.vstack([(t - p) ** 2 for t, p in zip(targets, outputs)]), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1 - noise / total, 1 - (mse - noise) / (total - noise), total


def ref_to_average(responses: np.ndarray, predictions: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """Correlation between the repeat-averaged responses and predictions over the images."""
    mean = lambda values: np.stack([v.mean(0) for v in by_image(values, image_ids)])  # noqa: E731
    return pearson(mean(responses), mean(predictions))


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def static_store(tmp_path_factory) -> Path:
    """The tiny static preset, converted; the source folders are kept (the submission reads
    their trial_idx and frame_image_id)."""
    from sensorium_jax.data.convert import convert
    from sensorium_jax.data.synthetic import generate

    root = tmp_path_factory.mktemp("static")
    sources = generate(root / "raw", preset="tiny", seed=0, static=True, progress=False)
    convert(sources, root / "store", progress=False)
    return root / "store"


@pytest.fixture(scope="module")
def static_config(static_store):
    config = load_config(REPO / "configs" / "smoke.py")
    config.data.store = str(static_store)
    config.data.clip_length = 1
    config.data.validation_tier = "validation"
    config.train.burn_in = 0
    config.model = default_model_config("toy_model")
    config.train.steps = 6
    config.train.eval_every = 3
    config.train.log_every = 3
    return config


@pytest.fixture(scope="module")
def static_run(static_config, tmp_path_factory) -> Path:
    from sensorium_jax.training.loop import train_and_evaluate

    workdir = tmp_path_factory.mktemp("static_run")
    train_and_evaluate(static_config, workdir)
    return workdir


@pytest.fixture(scope="module")
def evaluated(static_run, tmp_path_factory) -> tuple[dict, Path]:
    """evaluate.py's `evaluate` (what `python evaluate.py --workdir W --submission` runs)."""
    out = tmp_path_factory.mktemp("static_eval")
    report = runpy.run_path(str(REPO / "evaluate.py"))["evaluate"](static_run, out=out, submission=True)
    return report, out


@pytest.fixture(scope="module")
def scored_trials(static_run) -> dict:
    """(mouse, tier) -> responses, predictions [trials, N], trial indices and source image ids,
    from the loaded model on the store as evaluate.py reads it."""
    model = sensorium_jax.load(static_run)
    store = open_training_store(model.config.data, model.card.normalization, folds=False)
    out = {}
    for mouse in store.mice:
        meta = store.meta(mouse)
        image_ids = np.load(Path(meta.source) / "meta" / "trials" / "frame_image_id.npy")
        for tier in TIERS:
            parts = [(b["responses"][:, 0], model.predict_normalized(b)[:, 0], b["trial"])
                     for b in make_eval_batches(store, mouse, tier, 5)]
            r, p, t = (np.concatenate(x) for x in zip(*parts))
            n = meta.n_neurons
            out[mouse, tier] = {"r": r[:, :n].astype(np.float64), "p": p[:, :n].astype(np.float64), "trial": t,
                                "image": image_ids[t], "meta": meta}
    return out


# ----------------------------------------------------------------------------- scores


def test_feve_through_evaluate_equals_the_2022_numpy_definition(evaluated, scored_trials):
    report, _ = evaluated
    pooled_feve = {tier: [] for tier in TIERS}
    for (mouse, tier), trials in scored_trials.items():
        entry = report["mice"][mouse][tier]
        fev, feve, total = ref_fev_feve(trials["r"], trials["p"], trials["image"])
        # Neurons silent in the tier's trials have FEV NaN in 2022 (0 here): never kept either way.
        assert np.any(total == 0)
        kept = np.nan_to_num(fev, nan=-np.inf) >= FEV_THRESHOLD
        assert 0 < kept.sum() < len(kept), (mouse, tier)  # the threshold matters on this data
        assert entry["feve_neurons"] == int(kept.sum())
        assert entry["feve"] == pytest.approx(feve[kept].mean(), rel=1e-3, abs=1e-4)
        assert entry["fev"] == pytest.approx(np.nan_to_num(fev, nan=0.0).mean(), rel=1e-3, abs=1e-4)
        pooled_feve[tier].append(feve[kept])
    for tier in TIERS:  # pooled: the mean over the kept neurons of all mice
        assert report["pooled"][tier]["feve"] == pytest.approx(np.concatenate(pooled_feve[tier]).mean(), rel=1e-3,
                                                               abs=1e-4)


def test_correlations_through_evaluate_equal_numpy_references(evaluated, scored_trials):
    report, _ = evaluated
    for (mouse, tier), trials in scored_trials.items():
        entry = report["mice"][mouse][tier]
        assert entry["trials"] == len(trials["trial"]) and entry["neurons"] == trials["r"].shape[1]
        assert entry["single_trial_correlation"] == pytest.approx(pearson(trials["r"], trials["p"]).mean(), abs=1e-4)
        assert entry["correlation_to_average"] == pytest.approx(
            ref_to_average(trials["r"], trials["p"], trials["image"]).mean(), abs=1e-4)
    for tier in TIERS:
        per_neuron = np.concatenate([pearson(t["r"], t["p"]) for (m, x), t in scored_trials.items() if x == tier])
        assert report["pooled"][tier]["single_trial_correlation"] == pytest.approx(per_neuron.mean(), abs=1e-4)


def test_the_static_report_has_every_tier_pooled_and_static_plots(evaluated):
    report, out = evaluated
    assert report["burn_in"] == 0
    assert list(report["pooled"]) == list(TIERS)
    for tier in TIERS:
        assert {"single_trial_correlation", "correlation_to_average", "feve", "fev", "feve_neurons"} <= set(
            report["pooled"][tier])
    text = (out / "report.md").read_text()
    assert "| FEVE |" in text and "neurons with FEV >= 0.15" in text
    assert json.loads((out / "report.json").read_text())["pooled"] == report["pooled"]
    for name in ("correlations.png", "feve.png", "scatter.png", "positions.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "traces.png").exists()  # one frame per trial: no trace to draw


def test_a_burn_in_longer_than_a_static_trial_is_refused(static_store):
    from sensorium_jax.data.store import open_store

    store = open_store(static_store)
    with pytest.raises(InputDataError, match=r"burn_in: expected fewer frames than the validation trials' 1"):
        scoring.score_tier(None, store, store.mice[0], "validation", get_evaluators(["single_trial"]), burn_in=15)


# ----------------------------------------------------------------------------- submission


def test_the_2022_submission_csvs_read_back(evaluated, scored_trials):
    report, out = evaluated
    folder = out / "submission" / "sensorium_plus"  # the toy model reads behaviour
    mice = sorted({mouse for mouse, _ in scored_trials})
    assert sorted(report["submission"]) == sorted(str(folder / m / name) for m in mice
                                                   for name in STATIC_SUBMISSION_TIERS.values())
    assert report["submission_missing"] == {} and report["notes"] == []
    for tier, name in STATIC_SUBMISSION_TIERS.items():
        for mouse in mice:
            trials = scored_trials[mouse, tier]
            meta = trials["meta"]
            with (folder / mouse / name).open(newline="") as handle:
                rows = list(csv.reader(handle))
            assert tuple(rows[0]) == COLUMNS == ("trial_indices", "image_ids", "prediction", "neuron_ids")
            rows = rows[1:]
            assert len(rows) == len(meta.trials_of(tier)) == report["submission_contents"][tier][mouse]
            trial_idx = np.load(Path(meta.source) / "meta" / "trials" / "trial_idx.npy")
            np.testing.assert_array_equal([int(r[0]) for r in rows], trial_idx[trials["trial"]])
            np.testing.assert_array_equal([int(r[1]) for r in rows], trials["image"])
            predictions = np.array([json.loads(r[2]) for r in rows])
            np.testing.assert_allclose(predictions, trials["p"], rtol=1e-5, atol=1e-6)
            assert all(json.loads(r[3]) == meta.unit_ids.tolist() for r in rows)


def test_the_submission_track_follows_the_models_inputs():
    toy = default_model_config("toy_model")
    assert submission_track(toy) == "sensorium_plus"
    toy.inputs.behavior = False
    assert submission_track(toy) == "sensorium_plus"  # the shifter still reads the pupil centre
    toy.shifter.enabled = False
    assert submission_track(toy) == "sensorium"
    toy.track = "behavior"
    assert submission_track(toy) == "sensorium_plus"
    toy.track = "stimulus"
    assert submission_track(toy) == "sensorium"


# ----------------------------------------------------------------------------- load + predict


def test_load_predict_of_images_matches_the_trainers_predictions(static_run):
    from sensorium_jax.training import checkpointing
    from sensorium_jax.training.mesh import make_data_mesh
    from sensorium_jax.training.schedules import learning_rate_schedule, make_optimizer
    from sensorium_jax.training.state import create_train_state
    from sensorium_jax.training.steps import make_predict_step
    from sensorium_jax.training.validation import predict_tier

    model = sensorium_jax.load(static_run)
    assert model.static
    store = open_training_store(model.config.data)
    mouse = store.mice[1]
    mesh = make_data_mesh()
    schedule = learning_rate_schedule(model.config.schedule, int(model.config.train.steps))
    graphdef, state_like = create_train_state(
        build_model(model.config.model, model.card, nnx.Rngs(0)), make_optimizer(model.config.optimizer, schedule))
    checkpoints = checkpointing.Checkpoints(static_run)
    state, _ = checkpoints.restore(checkpointing.BEST, state_like)
    checkpoints.close()
    predict = make_predict_step(graphdef, mesh)
    batch, trainer = next(predict_tier(lambda b: predict(state.params, state.rest, b), store, mouse, "test", 4, mesh))

    # predict takes raw images, one behaviour and pupil row per image: undo the normalization.
    norm = store.normalization(mouse).window(0, 1)
    images = batch["video"][:, 0, ..., 0] * norm.video_std + norm.video_mean  # [B, H, W]
    behavior = batch["behavior"][:, 0] * norm.behavior_scale  # [B, 3]
    pupil = batch["pupil_center"][:, 0] * norm.pupil_std + norm.pupil_mean  # [B, 2]
    predicted = model.predict(images, behavior, pupil, mouse=mouse)
    n = store.meta(mouse).n_neurons
    assert predicted.shape == (len(images), n)
    np.testing.assert_allclose(predicted, trainer[:, 0, :n], rtol=2e-4, atol=2e-5)
    raw = model.predict(images, behavior, pupil, mouse=mouse, raw_units=True)
    np.testing.assert_allclose(raw, predicted * norm.response_scale, rtol=1e-5)  # [N] or [1, N]
    one = model.predict(images[0], behavior[0], pupil[0], mouse=mouse)  # one image -> [N]
    np.testing.assert_allclose(one, predicted[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputDataError, match=r"^predict: behavior: expected \[B, 3\] \(one row per image\)"):
        model.predict(images, behavior[:, None], pupil, mouse=mouse)


def test_image_inputs_of_the_wrong_shape_name_the_argument_and_the_expected_shape(static_store):
    from sensorium_jax.data.store import open_store

    card = open_store(static_store).card()
    h, w = card.frame_shape
    images, behavior, pupil = np.zeros((4, h, w)), np.zeros((4, 3)), np.zeros((4, 2))

    def refusal(*arrays) -> str:
        with pytest.raises(InputDataError) as error:
            images_as_trials(card, *arrays)
        assert "\n" not in str(error.value)
        return str(error.value)

    assert images_as_trials(card, images, behavior, pupil)[0].shape == (4, 1, h, w)
    assert refusal(images[:, :, :-1], behavior, pupil) == \
        f"predict: images: expected [H, W] or [B, H, W] with H, W = {h}, {w} (the model's images), " \
        f"found shape (4, {h}, {w - 1})"
    assert refusal(images[:, None], behavior, pupil).startswith("predict: images: expected [H, W] or [B, H, W]")
    assert refusal(images, behavior[:, :2], pupil) == \
        "predict: behavior: expected [B, 3] (one row per image) for images of shape [4, H, W], found shape (4, 2)"
    assert refusal(images, behavior[:3], pupil) == "predict: behavior: expected 4 rows (one per image), found 3 rows"
    assert refusal(images[0], behavior[0], pupil) == \
        "predict: pupil_center: expected [2] (one image) for images of shape [H, W], found shape (4, 2)"
    pupil[1, 0] = np.nan
    assert refusal(images, behavior, pupil) == "predict: pupil_center: expected finite values, found 1 NaN"
