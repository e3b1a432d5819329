"""One evaluation run: every mouse and tier scored, report.json/report.md, plots, submission."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sensorium_jax.data.datasets import oracle_ceiling, synthetic_truth
from sensorium_jax.evaluation import plots
from sensorium_jax.evaluation.evaluators import Evaluator, FractionOfExplainableVarianceExplained, get_evaluators
from sensorium_jax.evaluation.matching import MouseMatch, match_store
from sensorium_jax.evaluation.scoring import (
    TierScores, default_burn_in, default_tiers, pool_tier, score_tier, store_kind,
)
from sensorium_jax.evaluation.submission import SUBMISSION_TIERS, SubmissionWriter
from sensorium_jax.evaluation.submission_static import StaticSubmissionWriter, submission_track

__all__ = ["default_tiers", "markdown", "run_evaluation"]

# Pooled scores the synthetic data's ground truth has a ceiling for.
CEILING_METRICS = ("single_trial_correlation", "correlation_to_average")
BY_TYPE = "single_trial_correlation_by_type"  # the bonus tiers' per-OOD-type scores
FEV_THRESHOLD = FractionOfExplainableVarianceExplained.threshold  # neurons FEVE is averaged over


def run_evaluation(
    predictor,
    store,
    out: str | Path,
    *,
    tiers: Sequence[str] | None = None,
    burn_in: int | None = None,
    batch_size: int = 8,
    submission: bool = False,
    evaluators: Sequence[str] | None = None,
    trained_tiers: Sequence[str] = (),
) -> dict:
    """Scores `predictor` on every (mouse, tier) with the named evaluators (None: all) and writes
    report.json, report.md, plots and, with `submission`, the competition files into `out`.
    Scored tiers among `trained_tiers` (whose trials trained the model) are marked as such:
    their scores are not held out.

    Store mice are matched to the model's by name and their neurons by unit id (refused with
    one line when the model does not know them), whatever the store's order."""
    out = Path(out)
    tiers = list(tiers) if tiers else default_tiers(store)
    burn_in = default_burn_in(store) if burn_in is None else int(burn_in)
    matches = match_store(predictor.card, store)  # refuses before anything is written
    out.mkdir(parents=True, exist_ok=True)
    chosen = get_evaluators(evaluators)
    writer = submission_writer(predictor, store, out / "submission") if submission else None
    jobs = [(m, t) for m in store.mice for t in tiers if len(store.meta(m).trials_of(t))]
    results = [score_tier(predictor, store, mouse, tier, chosen, burn_in=burn_in, batch_size=batch_size, sink=writer,
                          match=matches[mouse])
               for mouse, tier in tqdm(jobs, desc="evaluate", unit="tier")]
    files = [str(p) for p in writer.close()] if writer else []

    report = {
        "checkpoint": predictor.source,
        "store": str(store.path),
        "burn_in": burn_in,
        "evaluators": list(chosen),
        "mice": {},
        "pooled": {},
        "submission": files,
        "trained_on": [tier for tier in tiers if tier in set(trained_tiers)],
    }
    if writer is not None:
        report["submission_tiers"] = writer.tier_files()
        report["submission_contents"] = writer.contents()
        report["submission_missing"] = writer.missing(predictor.card.names)
    for r in results:
        entry = {"trials": r.trials, "neurons": r.neurons, "scored": r.scored}
        report["mice"].setdefault(r.mouse, {})[r.tier] = {**entry, **(r.pooled() if r.scored else {})}
    for tier in tiers:
        scored = [r for r in results if r.tier == tier and r.scored]
        if scored:
            report["pooled"][tier] = _pooled_entry(store, tier, scored, chosen)
    report["plots"], report["notes"] = _plots(predictor, store, results, out, matches)
    if writer is not None:
        report["notes"] += writer.notes()
    if report["trained_on"]:
        report["notes"].append(f"**Not held out**: {', '.join(report['trained_on'])}: trials the model trained on "
                               "(a cross-validation fold's run trains on its labelled tiers' other folds); "
                               "its own held-out scores are each run's validation.")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    return report


def submission_writer(predictor, store, out: Path) -> SubmissionWriter | StaticSubmissionWriter:
    """The competition's file writer for the store's kind: 2023 parquet for video, 2022 CSV
    (in the model's track) for static images."""
    if store_kind(store).is_video:
        return SubmissionWriter(out, store)
    return StaticSubmissionWriter(out, store, submission_track(predictor.config.model))


def _pooled_entry(store, tier: str, scored: list[TierScores], evaluators: dict[str, Evaluator]) -> dict:
    """One tier pooled over all neurons of all mice, with the synthetic oracle ceiling if known."""
    entry = {**pool_tier(scored, evaluators), "neurons": int(sum(r.neurons for r in scored)),
             "trials": int(sum(r.trials for r in scored))}
    ceiling = {name: oracle_ceiling(store, tier, name) for name in CEILING_METRICS if name in entry}
    if ceiling and all(ceiling.values()):
        entry["oracle_ceiling"] = ceiling
        entry["fraction_of_ceiling"] = {name: entry[name] / value for name, value in ceiling.items()}
    return entry


def feve_of_kept_neurons(results: list[TierScores]) -> dict[str, np.ndarray]:
    """Tier -> per-neuron FEVE of the neurons FEVE is averaged over (FEV at the threshold or
    above), all mice of the tier concatenated; tiers without any left out."""
    out = {}
    for tier in dict.fromkeys(r.tier for r in results):
        values = [r.results["feve"].per_neuron for r in results
                  if r.tier == tier and r.scored and "feve" in r.results]
        kept = [v["feve"][v["fev"] >= FEV_THRESHOLD] for v in values]
        if kept and sum(len(k) for k in kept):
            out[tier] = np.concatenate(kept)
    return out


def readout_pixels(predictor) -> tuple[np.ndarray | None, str]:
    """(pixels [M, Nmax, 2] in screen pixels or None, why not) from the predictor's
    `readout_positions()`, a `sensorium_jax.models.base.ReadoutPositions`."""
    positions = predictor.readout_positions()
    pixels = positions.pixels
    return (None, positions.reason) if pixels is None else (np.asarray(pixels), "")


def _plots(predictor, store, results: list[TierScores], out: Path,
           matches: dict[str, MouseMatch]) -> tuple[list[str], list[str]]:
    """(plot files made, notes on plots that could not be made)."""
    made, notes = [], []
    single = {}
    for tier in dict.fromkeys(r.tier for r in results):
        values = [r.results["single_trial"].per_neuron["single_trial_correlation"]
                  for r in results if r.tier == tier and r.scored and "single_trial" in r.results]
        if values:
            single[tier] = np.concatenate(values)
    if single:
        made.append(plots.correlation_histograms(single, out / "correlations.png"))
    feve = feve_of_kept_neurons(results)
    if feve:
        made.append(plots.correlation_histograms(
            feve, out / "feve.png", xlabel=f"FEVE (neurons with FEV >= {FEV_THRESHOLD})"))
    example = next((r for r in results if r.scored and r.example is not None), None)
    if example is not None and example.example["axis"] == "trial":
        made.append(plots.example_scatter(
            example.example["recorded"], example.example["predicted"],
            f"{example.mouse}, {example.tier}: {len(example.example['recorded'])} trials", out / "scatter.png"))
    elif example is not None:
        made.append(plots.example_traces(
            example.example["recorded"], example.example["predicted"],
            f"{example.mouse}, {example.tier} trial {example.example['trial']}", out / "traces.png"))
    pixels, reason = readout_pixels(predictor)
    if pixels is None:
        notes.append(f"No readout-position plot: {reason}.")
    else:
        match = matches[store.mice[0]]
        mouse = match.mouse
        true = (synthetic_truth(store) or {}).get(mouse, {}).get("rf_position_px")  # in the store's order
        made.append(plots.readout_positions(
            pixels[match.model_index, match.neurons], np.asarray(true) if true is not None else None,
            predictor.card.frame_shape, f"{mouse}: readout positions", out / "positions.png"))
    return [str(p) for p in made], notes


# ----------------------------------------------------------------------------- report.md


def submission_lines(report: dict) -> list[str]:
    """What the submission holds, file by file, and loudly what it lacks (never a silent partial zip)."""
    contents, missing = report.get("submission_contents", {}), report.get("submission_missing", {})
    files = report.get("submission_tiers") or {tier: name for tier, (name, _) in SUBMISSION_TIERS.items()}
    lines = ["## Submission", ""]
    for tier, name in files.items():
        mice = contents.get(tier)
        if mice:
            written = ", ".join(f"{mouse} ({rows} trials)" for mouse, rows in mice.items())
            lines.append(f"- `{name}` ({tier}): {written}")
        else:
            lines.append(f"- `{name}` ({tier}): not written (no {tier} trials among the evaluated tiers)")
    lines += ["", "Files: " + (", ".join(f"`{z}`" for z in report["submission"]) or "none"), ""]
    if missing:
        gaps = "; ".join(f"{tier} lacks {', '.join(mice)}" for tier, mice in missing.items())
        lines.append(f"**WARNING: incomplete submission**: {gaps}.")
    else:
        lines.append("Complete: every submission tier holds every mouse of the model.")
    return lines

# Scalar columns of the tables, in order, with their headers; other scalars follow by name.
COLUMNS = {
    "single_trial_correlation": "single-trial corr.",
    "correlation_to_average": "corr. to average",
    "feve": "FEVE",
    "fev": "FEV",
    "feve_neurons": f"neurons with FEV >= {FEV_THRESHOLD}",
    "single_trial_correlation_type_mean": "OOD type mean",
}
SKIPPED = {"neurons", "trials", "scored", "oracle_ceiling", "fraction_of_ceiling", BY_TYPE}


def _columns(entries: list[dict]) -> list[str]:
    names = [k for e in entries for k, v in e.items() if k not in SKIPPED and not isinstance(v, dict)]
    names = list(dict.fromkeys(names))
    return [c for c in COLUMNS if c in names] + [c for c in names if c not in COLUMNS]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown(report: dict) -> str:
    """report.json as tables: pooled per tier, per mouse and tier, bonus tiers per OOD type."""
    lines = [f"# Evaluation of `{report['checkpoint']}`", "", f"Store: `{report['store']}`, burn-in "
             f"{report['burn_in']} frames.", "", "## Pooled over all neurons of all mice", ""]
    pooled = report["pooled"]
    columns = _columns(list(pooled.values()))
    lines += ["| tier | " + " | ".join(COLUMNS.get(c, c) for c in columns)
              + " | neurons | trials | fraction of oracle (single / avg) |",
              "|" + "---|" * (len(columns) + 4)]
    for tier, v in pooled.items():
        fraction = v.get("fraction_of_ceiling")
        frac = " / ".join(f"{fraction[m]:.2f}" for m in CEILING_METRICS if m in fraction) if fraction else "-"
        name = f"{tier} (trained on)" if tier in report.get("trained_on", ()) else tier
        lines.append(f"| {name} | " + " | ".join(_cell(v.get(c)) for c in columns)
                     + f" | {v['neurons']} | {v['trials']} | {frac} |")
    if "feve" in columns:
        lines += ["", f"FEVE is the mean over the neurons whose FEV reaches {FEV_THRESHOLD} (the SENSORIUM 2022 "
                  "rule); FEV is the mean over all neurons."]
    by_type = {tier: v for tier, v in pooled.items() if BY_TYPE in v}
    if by_type:
        lines += ["", "## Bonus tiers per out-of-distribution stimulus type", "",
                  "Single-trial correlation per stimulus type, pooled over all neurons of all mice; the bonus "
                  "score is their mean over the types.", "", "| tier | stimulus type | single-trial corr. |",
                  "|---|---|---|"]
        for tier, v in by_type.items():
            lines += [f"| {tier} | {kind} | {_cell(value)} |" for kind, value in v[BY_TYPE].items()]
            lines.append(f"| {tier} | **mean over types** | {_cell(v['single_trial_correlation_type_mean'])} |")
    entries = [v for tiers in report["mice"].values() for v in tiers.values()]
    columns = _columns(entries)
    lines += ["", "## Per mouse", "", "| mouse | tier | " + " | ".join(COLUMNS.get(c, c) for c in columns)
              + " | neurons | trials |", "|" + "---|" * (len(columns) + 4)]
    for mouse, tiers in report["mice"].items():
        for tier, v in tiers.items():
            if v["scored"]:
                cells = " | ".join(_cell(v.get(c)) for c in columns)
            else:
                cells = " | ".join(["withheld (predicted only)"] + [""] * max(len(columns) - 1, 0))
            lines.append(f"| {mouse} | {tier} | {cells} | {v['neurons']} | {v['trials']} |")
    if "submission_contents" in report:
        lines += ["", *submission_lines(report)]
    if report["plots"]:
        lines += ["", "Plots: " + ", ".join(f"`{Path(p).name}`" for p in report["plots"])]
    for note in report.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"
