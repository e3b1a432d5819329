"""One evaluation run: every mouse and tier scored, report.json/report.md, plots, submission."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sensorium_jax.data.datasets import oracle_ceiling, synthetic_truth
from sensorium_jax.evaluation import plots
from sensorium_jax.evaluation.scoring import TierResult, evaluate_tier
from sensorium_jax.evaluation.submission import SubmissionWriter

SKIPPED_TIERS = ("train", "none")
METRICS = ("single_trial_correlation", "correlation_to_average")


def default_tiers(store) -> list[str]:
    seen: list[str] = []
    for mouse in store.mice:
        for tier in store.meta(mouse).tiers:
            if tier not in SKIPPED_TIERS and tier not in seen:
                seen.append(str(tier))
    return seen


def run_evaluation(
    predictor,
    store,
    out: str | Path,
    *,
    tiers: Sequence[str] | None = None,
    burn_in: int = 50,
    batch_size: int = 8,
    submission: bool = False,
) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tiers = list(tiers) if tiers else default_tiers(store)
    unknown_mice = [m for m in store.mice if m not in predictor.card.names]
    if unknown_mice:
        from sensorium_jax.errors import InputDataError

        raise InputDataError(store.path, "mice", f"mice the model was trained on ({', '.join(predictor.card.names)})",
                             ", ".join(unknown_mice))
    writer = SubmissionWriter(out / "submission", store, burn_in=burn_in) if submission else None
    results: list[TierResult] = []
    jobs = [(m, t) for m in store.mice for t in tiers if len(store.meta(m).trials_of(t))]
    for mouse, tier in tqdm(jobs, desc="evaluate", unit="tier"):
        results.append(evaluate_tier(predictor, store, mouse, tier, batch_size=batch_size, burn_in=burn_in,
                                     sink=writer))
    zips = [str(p) for p in writer.close()] if writer else []

    report = {
        "checkpoint": predictor.source,
        "store": str(store.path),
        "burn_in": burn_in,
        "mice": {},
        "pooled": {},
        "submission": zips,
    }
    for r in results:
        report["mice"].setdefault(r.mouse, {})[r.tier] = r.summary()
    pooled_values: dict[str, dict[str, np.ndarray]] = {}
    for tier in tiers:
        scored = [r for r in results if r.tier == tier and r.scored]
        if not scored:
            continue
        values = {"single_trial_correlation": np.concatenate([r.single_trial for r in scored]),
                  "correlation_to_average": np.concatenate([r.to_average for r in scored])}
        pooled_values[tier] = values
        report["pooled"][tier] = {name: float(v.mean()) for name, v in values.items()}
        report["pooled"][tier].update(neurons=int(values["single_trial_correlation"].size),
                                      trials=int(sum(r.trials for r in scored)))
        ceiling = {name: oracle_ceiling(store, tier, name) for name in METRICS}
        if all(c for c in ceiling.values()):
            report["pooled"][tier]["oracle_ceiling"] = ceiling
            report["pooled"][tier]["fraction_of_ceiling"] = {
                name: report["pooled"][tier][name] / ceiling[name] for name in METRICS
            }
    report["plots"] = _plots(predictor, store, results, pooled_values, out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    return report


def _plots(predictor, store, results: list[TierResult], pooled: dict, out: Path) -> list[str]:
    made = []
    if pooled:
        made.append(plots.correlation_histograms(
            {t: v["single_trial_correlation"] for t, v in pooled.items()}, out / "correlations.png"))
    example = next((r for r in results if r.scored and r.example is not None), None)
    if example is not None:
        made.append(plots.example_traces(
            example.example["recorded"], example.example["predicted"],
            f"{example.mouse}, {example.tier} trial {example.example['trial']}", out / "traces.png"))
    grid = predictor.readout_positions()
    truth = synthetic_truth(store) or {}
    if grid is not None:
        mouse = store.mice[0]
        index = predictor.card.index(mouse)
        n = predictor.card.mice[index].n_neurons
        learned = plots.grid_to_screen(grid[index, :n], predictor.card.frame_shape, predictor.config.model)
        true = truth.get(mouse, {}).get("rf_position_px")
        if learned is not None:
            made.append(plots.readout_positions(
                learned, np.asarray(true) if true is not None else None, predictor.card.frame_shape,
                f"{mouse}: readout positions", out / "positions.png"))
    return [str(p) for p in made]


def markdown(report: dict) -> str:
    lines = [f"# Evaluation of `{report['checkpoint']}`", "", f"Store: `{report['store']}`, burn-in "
             f"{report['burn_in']} frames.", "", "## Pooled over all neurons of all mice", "",
             "| tier | single-trial corr. | corr. to average | neurons | trials | fraction of oracle (single / avg) |",
             "|---|---|---|---|---|---|"]
    for tier, v in report["pooled"].items():
        fraction = v.get("fraction_of_ceiling")
        frac = f"{fraction['single_trial_correlation']:.2f} / {fraction['correlation_to_average']:.2f}" if fraction else "-"
        lines.append(f"| {tier} | {v['single_trial_correlation']:.4f} | {v['correlation_to_average']:.4f} | "
                     f"{v['neurons']} | {v['trials']} | {frac} |")
    lines += ["", "## Per mouse", "", "| mouse | tier | single-trial corr. | corr. to average | neurons | trials |",
              "|---|---|---|---|---|---|"]
    for mouse, tiers in report["mice"].items():
        for tier, v in tiers.items():
            if v["scored"]:
                lines.append(f"| {mouse} | {tier} | {v['single_trial_correlation']:.4f} | "
                             f"{v['correlation_to_average']:.4f} | {v['neurons']} | {v['trials']} |")
            else:
                lines.append(f"| {mouse} | {tier} | withheld (predicted only) | | {v['neurons']} | {v['trials']} |")
    if report["submission"]:
        lines += ["", "Submission files: " + ", ".join(f"`{z}`" for z in report["submission"])]
    if report["plots"]:
        lines += ["", "Plots: " + ", ".join(f"`{Path(p).name}`" for p in report["plots"])]
    return "\n".join(lines) + "\n"
