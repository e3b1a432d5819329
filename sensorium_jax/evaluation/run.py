"""Scoring trained workdirs on a store's tiers, as evaluate.py (and the fold ensemble) do it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _absolute(path: str | Path) -> Path:
    """A user's path, relative to the current folder, made absolute (orbax and tensorstore need it)."""
    return Path(path).expanduser().resolve()


def evaluate(
    workdir: str | Path,
    ensemble: Sequence[str | Path] = (),
    store: str | Path = "",
    tiers: Sequence[str] | None = None,
    out: str | Path = "",
    burn_in: int | None = None,
    batch_size: int = 8,
    submission: bool = False,
    window_rule: str = "",
) -> dict:
    """Loads the model(s), scores them with every registered evaluator and writes the report into
    `out` (default WORKDIR/evaluation); returns report.json's content. `window_rule` (when set)
    replaces each model's own rule for combining fixed-length windows over a trial."""
    from sensorium_jax.data.datasets import open_normalized_store, open_training_store
    from sensorium_jax.data.folds import stored_training_tiers
    from sensorium_jax.evaluation.report import run_evaluation
    from sensorium_jax.evaluation.scoring import WindowedPredictor, store_kind
    from sensorium_jax.inference import EnsemblePredictor, load

    workdir = _absolute(workdir)
    members = [load(path) for path in [workdir, *map(_absolute, ensemble)]]
    trained_tiers = sorted({tier for member in members for tier in stored_training_tiers(member.config.data)})
    mode = members[0].card.normalization  # batches normalized as the (first) model was trained
    if window_rule:
        members = [WindowedPredictor(member, window_rule) for member in members]
    predictor = members[0] if len(members) == 1 else EnsemblePredictor(members)
    config = members[0].config
    # The tiers as stored, even for a model trained on cross-validation folds.
    scored_store = open_normalized_store(_absolute(store), mode) if store else \
        open_training_store(config.data, mode, folds=False)
    if burn_in is None and store_kind(scored_store).is_video:
        burn_in = config.train.get("burn_in")  # None: the data kind's
    # A static trial has one frame: the kind's burn-in (0), whatever a video-style config says.
    out = _absolute(out) if out else workdir / "evaluation"
    report = run_evaluation(predictor, scored_store, out, tiers=list(tiers) if tiers else None, burn_in=burn_in,
                            batch_size=batch_size, submission=submission, trained_tiers=trained_tiers)
    print((out / "report.md").read_text())
    for tier, mice in report.get("submission_missing", {}).items():
        print(f"warning: incomplete submission: {tier} lacks {', '.join(mice)}")
    print(f"report: {out / 'report.json'}")
    return report
