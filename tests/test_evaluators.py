"""Evaluators equal independent NumPy computations; one tier loop feeds them all; reports show them."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from sensorium_jax.data.pipeline import make_eval_batches
from sensorium_jax.data.store import open_store
from sensorium_jax.evaluation import evaluators, report, scoring
from sensorium_jax.evaluation.evaluators import Evaluator, get_evaluator, get_evaluators, register_evaluator
from sensorium_jax.models.base import ReadoutPositions
from sensorium_jax.training.mesh import make_data_mesh
from sensorium_jax.training.validation import ShardedPredictor, validation_score

BURN_IN = 15
LOST = 4  # frames the "trainer" predictor leaves NaN


def fake_prediction(responses: np.ndarray, trial: np.ndarray) -> np.ndarray:
    """Predictions that depend on each trial alone (not on how trials are batched)."""
    b, t, n = responses.shape
    wiggle = np.cos(0.37 * trial[:, None, None] + 0.21 * np.arange(t)[None, :, None] + 0.13 * np.arange(n))
    return (0.6 * np.nan_to_num(responses) + wiggle + 2.0).astype(np.float32)


class FakePredictor:
    """evaluate.py's predictor interface: whole trials, no NaN; counts its calls."""

    def __init__(self, store, positions: ReadoutPositions | None = None):
        self.card = store.card()
        self.source = "fake"
        self.calls = 0
        self.positions = positions or ReadoutPositions(None, reason="the fake model has no readout")

    def predict_normalized(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        self.calls += 1
        return fake_prediction(batch["responses"], batch["trial"])

    def readout_positions(self) -> ReadoutPositions:
        return self.positions


@pytest.fixture(scope="module")
def store(tiny_store):
    return open_store(tiny_store)


@pytest.fixture
def typed():
    """Each trial's stimulus type, as the store records it."""
    return lambda meta: np.asarray(meta.stimulus_types).astype(str)


def trials_of(store, mouse: str, tier: str, predict) -> list[dict]:
    """Every trial of the tier trimmed to its length: responses, predictions, stimulus, trial."""
    out = []
    for batch in make_eval_batches(store, mouse, tier, 5):
        predictions = predict(batch)
        for j in range(batch["trial"].shape[0]):
            length = int(batch["frame_mask"][j].sum())
            n = store.meta(mouse).n_neurons
            out.append({"r": batch["responses"][j, :length, :n].astype(np.float64),
                        "p": predictions[j, :length, :n].astype(np.float64),
                        "stimulus": int(batch["stimulus"][j]), "trial": int(batch["trial"][j])})
    return out


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column Pearson of [rows, N] arrays in float64; zero variance gives 0."""
    x, y = x - x.mean(0), y - y.mean(0)
    denominator = np.sqrt((x * x).sum(0) * (y * y).sum(0))
    return np.where(denominator > 0, (x * y).sum(0) / np.where(denominator > 0, denominator, 1), 0.0)


def counted(trial: dict, burn_in: int) -> np.ndarray:
    return np.flatnonzero((np.arange(len(trial["r"])) >= burn_in) & ~np.isnan(trial["p"][:, 0]))


def ref_single_trial(trials: list[dict], burn_in: int) -> np.ndarray:
    rows = [(t["r"][counted(t, burn_in)], t["p"][counted(t, burn_in)]) for t in trials]
    return pearson(np.concatenate([r for r, _ in rows]), np.concatenate([p for _, p in rows]))


def repeat_cells(trials: list[dict], burn_in: int) -> dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]]:
    cells: dict[tuple[int, int], list] = {}
    for t in trials:
        for f in counted(t, burn_in):
            cells.setdefault((t["stimulus"], int(f)), []).append((t["r"][f], t["p"][f]))
    return cells


def ref_to_average(trials: list[dict], burn_in: int) -> np.ndarray:
    cells = repeat_cells(trials, burn_in).values()
    return pearson(np.array([np.mean([r for r, _ in c], 0) for c in cells]),
                   np.array([np.mean([p for _, p in c], 0) for c in cells]))


def ref_feve(trials: list[dict], burn_in: int) -> tuple[np.ndarray, np.ndarray]:
    """FEVE and FEV by their definition: cells (stimulus, frame) shown at least twice."""
    cells = [c for c in repeat_cells(trials, burn_in).values() if len(c) >= 2]
    r = [np.array([x for x, _ in c]) for c in cells]
    p = [np.array([y for _, y in c]) for c in cells]
    noise = np.mean([x.var(0, ddof=1) for x in r], 0)
    total = np.concatenate(r).var(0, ddof=1)
    mse = ((np.concatenate(r) - np.concatenate(p)) ** 2).mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        feve, fev = 1 - (mse - noise) / (total - noise), (total - noise) / total
    silent = total <= 1e-6  # no variance to explain in these trials: FEV and FEVE 0 (metrics.feve)
    return np.where(silent, 0.0, feve), np.where(silent, 0.0, fev)


def test_registry_finds_evaluators_by_name_and_rejects_unknown_ones():
    assert {"single_trial", "to_average", "feve", "ood_single_trial"} <= set(evaluators.evaluator_names())
    assert get_evaluator("single_trial").primary == "single_trial_correlation"
    with pytest.raises(ValueError, match="unknown evaluator 'nope'"):
        get_evaluator("nope")


def test_one_pass_feeds_every_evaluator_and_each_equals_numpy(store, typed):
    mouse, tier = store.mice[1], "final_test_bonus"
    predictor = FakePredictor(store)
    chosen = get_evaluators()
    scores = scoring.score_tier(predictor, store, mouse, tier, chosen, burn_in=BURN_IN, batch_size=4)
    n_trials = len(store.meta(mouse).trials_of(tier))
    assert predictor.calls == -(-n_trials // 4)  # each batch predicted once for all four evaluators
    assert set(scores.results) == set(chosen) and scores.scored

    trials = trials_of(store, mouse, tier, lambda b: fake_prediction(b["responses"], b["trial"]))
    results = scores.results
    np.testing.assert_allclose(results["single_trial"].per_neuron["single_trial_correlation"],
                               ref_single_trial(trials, BURN_IN), atol=2e-5)
    np.testing.assert_allclose(results["to_average"].per_neuron["correlation_to_average"],
                               ref_to_average(trials, BURN_IN), atol=2e-5)
    feve, fev = ref_feve(trials, BURN_IN)
    np.testing.assert_allclose(results["feve"].per_neuron["feve"], feve, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(results["feve"].per_neuron["fev"], fev, rtol=1e-3, atol=1e-4)
    kept = fev >= 0.15
    assert 0 < kept.sum() and results["feve"].pooled["feve_neurons"] == kept.sum()
    assert results["feve"].pooled["feve"] == pytest.approx(feve[kept].mean(), rel=1e-4)

    types = typed(store.meta(mouse))
    by_type = {}
    for kind in sorted(set(types[[t["trial"] for t in trials]])):
        by_type[kind] = ref_single_trial([t for t in trials if types[t["trial"]] == kind], BURN_IN)
    assert len(by_type) >= 2
    ood = results["ood_single_trial"].pooled
    assert set(ood["single_trial_correlation_by_type"]) == set(by_type)
    for kind, values in by_type.items():
        assert ood["single_trial_correlation_by_type"][kind] == pytest.approx(values.mean(), abs=2e-5)
    assert ood["single_trial_correlation_type_mean"] == pytest.approx(
        np.mean([v.mean() for v in by_type.values()]), abs=2e-5)


def test_evaluators_apply_only_where_defined(store):
    chosen = get_evaluators()
    oracle = scoring.score_tier(FakePredictor(store), store, store.mice[0], "oracle", chosen, batch_size=8)
    assert set(oracle.results) == {"single_trial", "to_average", "feve"}  # not a bonus tier
    bonus = scoring.score_tier(FakePredictor(store), store, store.mice[0], "live_test_bonus", chosen, batch_size=8)
    assert set(bonus.results) == set(chosen)
    assert set(scoring.default_tiers(store)) == {"oracle", "live_test_main", "live_test_bonus", "final_test_main",
                                                 "final_test_bonus"}  # never train or none


def test_trainer_validation_masks_frames_the_model_cannot_predict(store):
    """The trainer's sharded predictor (NaN for the first LOST frames) through the same loop."""

    def predict(batch):  # a model that loses LOST frames: [B, T - LOST, Nmax]
        r, trial = batch["responses"], batch["trial"]
        t, n = r.shape[1], r.shape[2]
        wiggle = jnp.cos(0.37 * trial[:, None, None] + 0.21 * jnp.arange(t)[None, :, None] + 0.13 * jnp.arange(n))
        return (0.6 * r + wiggle + 2.0)[:, LOST:]

    mesh = make_data_mesh()
    sharded = ShardedPredictor(predict, mesh, 8, frames_lost=LOST)
    pooled, per_mouse = validation_score(sharded, store, store.mice, "oracle", "single_trial", 8, burn_in=0)

    def reference_predictions(batch):
        out = fake_prediction(batch["responses"], batch["trial"])
        out[:, :LOST] = np.nan
        return out

    references = {m: ref_single_trial(trials_of(store, m, "oracle", reference_predictions), 0) for m in store.mice}
    for mouse, values in references.items():
        assert per_mouse[mouse] == pytest.approx(values.mean(), abs=2e-5)
    assert pooled == pytest.approx(np.concatenate(list(references.values())).mean(), abs=2e-5)


def test_adding_a_metric_is_one_registered_class(store, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluators, "_REGISTRY", dict(evaluators._REGISTRY))

    @register_evaluator("mean_squared_error")
    class MeanSquaredError(Evaluator):
        primary = "mse"

        def init(self, info):
            return np.zeros(info.n_neurons), 0

        def update(self, state, batch, predictions, mask):
            err = np.where(mask[..., None], (batch["responses"] - predictions) ** 2, 0.0)
            return state[0] + err.sum((0, 1)), state[1] + int(mask.sum())

        def per_neuron(self, state):
            return {"mse": (state[0] / state[1]).astype(np.float32)}

    written = report.run_evaluation(FakePredictor(store), store, tmp_path, tiers=["oracle"], burn_in=BURN_IN)
    per_mouse = []
    for mouse in store.mice:
        trials = trials_of(store, mouse, "oracle", lambda b: fake_prediction(b["responses"], b["trial"]))
        per_mouse.append(np.concatenate([(t["r"][BURN_IN:] - t["p"][BURN_IN:]) ** 2 for t in trials]).mean(0))
        assert written["mice"][mouse]["oracle"]["mse"] == pytest.approx(per_mouse[-1].mean(), rel=1e-5)
    assert written["pooled"]["oracle"]["mse"] == pytest.approx(np.concatenate(per_mouse).mean(), rel=1e-5)
    assert "mean_squared_error" in written["evaluators"]
    assert "| mse |" in (tmp_path / "report.md").read_text()


def test_report_shows_bonus_tiers_per_stimulus_type_and_feve(store, typed, tmp_path):
    pixels = np.stack(np.meshgrid(np.arange(store.max_neurons), np.arange(len(store.mice))), -1)[..., ::-1] * 0.1
    predictor = FakePredictor(store, ReadoutPositions(pixels.astype(np.float32)))
    written = report.run_evaluation(predictor, store, tmp_path, tiers=["oracle", "final_test_bonus"], burn_in=BURN_IN)
    saved = json.loads((tmp_path / "report.json").read_text())
    text = (tmp_path / "report.md").read_text()
    bonus = saved["pooled"]["final_test_bonus"]

    per_type: dict[str, list[np.ndarray]] = {}
    for mouse in store.mice:
        types = typed(store.meta(mouse))
        trials = trials_of(store, mouse, "final_test_bonus", lambda b: fake_prediction(b["responses"], b["trial"]))
        for kind in sorted(set(types[[t["trial"] for t in trials]])):
            per_type.setdefault(kind, []).append(
                ref_single_trial([t for t in trials if types[t["trial"]] == kind], BURN_IN))
        mine = saved["mice"][mouse]["final_test_bonus"]
        assert set(mine["single_trial_correlation_by_type"]) == set(types[[t["trial"] for t in trials]])
    expected = {kind: np.concatenate(v).mean() for kind, v in per_type.items()}
    assert len(expected) >= 2
    assert bonus["single_trial_correlation_by_type"] == pytest.approx(expected, abs=2e-5)
    assert bonus["single_trial_correlation_type_mean"] == pytest.approx(np.mean(list(expected.values())), abs=2e-5)
    for kind, value in bonus["single_trial_correlation_by_type"].items():
        assert f"| final_test_bonus | {kind} | {value:.4f} |" in text
    assert f"| final_test_bonus | **mean over types** | {bonus['single_trial_correlation_type_mean']:.4f} |" in text

    assert "single_trial_correlation_by_type" not in saved["pooled"]["oracle"]
    for tier in ("oracle", "final_test_bonus"):
        assert np.isfinite(saved["pooled"][tier]["feve"]) and "FEVE" in text
        for mouse in store.mice:
            assert "feve" in saved["mice"][mouse][tier]
    assert written == saved
    assert (tmp_path / "positions.png").stat().st_size > 0


def test_report_says_why_there_is_no_position_plot(store, tmp_path):
    report.run_evaluation(FakePredictor(store), store, tmp_path, tiers=["oracle"], evaluators=["single_trial"])
    assert not (tmp_path / "positions.png").exists()
    assert "No readout-position plot: the fake model has no readout." in (tmp_path / "report.md").read_text()
