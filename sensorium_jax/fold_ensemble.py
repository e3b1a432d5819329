"""The cross-validation regime of the first-place recipe as one command: a model per fold,
optionally a distilled second stage per fold, then the ensemble of every run scored.

    python -m sensorium_jax.fold_ensemble --config configs/dwiseneuro.py \\
        --distill_config configs/dwiseneuro.py:distill --workdir runs/dwiseneuro_folds \\
        --config.data.store=STORE --submission

Fold k (`data.fold=k`) trains on the other folds' labelled trials and validates on fold k, in
WORKDIR/fold_k. With `--distill_config`, WORKDIR/distilled_fold_k trains that config on the
first stage's data (its whole `data` section, so both stages see the same folds) with
WORKDIR/fold_k as its teacher. Every run resumes where it stopped: after an interruption the
same command continues with the run it was on, and finished runs are not trained again.
The ensemble of all runs (their predictions averaged) is scored on the tiers as stored into
WORKDIR/evaluation (with the submission files on `--submission`); WORKDIR/folds.json lists
each run's best validation correlation.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import ml_collections

FIRST_STAGE, DISTILLED = "first", "distilled"
SUMMARY_FILE = "folds.json"


@dataclasses.dataclass(frozen=True)
class FoldRun:
    """One training run of the regime."""
    stage: str
    fold: int
    workdir: Path
    config: ml_collections.ConfigDict


def fold_runs(config: ml_collections.ConfigDict, root: str | Path,
              distill_config: ml_collections.ConfigDict | None = None,
              folds: Sequence[int] | None = None) -> list[FoldRun]:
    """Every run, in training order: fold k's first stage, then (with `distill_config`) its
    distilled stage, then fold k + 1's. `folds` default: all `config.data.n_folds`."""
    root = Path(root)
    folds = list(range(int(config.data.n_folds))) if folds is None else [int(k) for k in folds]
    runs = []
    for fold in folds:
        first = _unlocked_copy(config)
        first.data.fold = fold
        runs.append(FoldRun(FIRST_STAGE, fold, root / f"fold_{fold}", first))
        if distill_config is not None:
            second = _unlocked_copy(distill_config)
            second.data = _unlocked_copy(first.data)
            second.train.distill.teacher = str(runs[-1].workdir)
            runs.append(FoldRun(DISTILLED, fold, root / f"distilled_fold_{fold}", second))
    return runs


def _unlocked_copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(config.to_dict())


def train_folds(runs: Sequence[FoldRun], root: str | Path) -> list[dict]:
    """Trains (or resumes, or finds finished) each run in order; writes and returns the summary
    rows (stage, fold, workdir, best validation correlation and step)."""
    from sensorium_jax.training.loop import train_and_evaluate

    rows = []
    for index, run in enumerate(runs, start=1):
        print(f"[{index}/{len(runs)}] {run.stage} stage, fold {run.fold}: {run.workdir}", flush=True)
        summary = train_and_evaluate(run.config, run.workdir)
        rows.append({"stage": run.stage, "fold": run.fold, "workdir": str(run.workdir),
                     "best_validation_correlation": summary.best_validation_correlation,
                     "best_step": summary.best_step})
    (Path(root) / SUMMARY_FILE).write_text(json.dumps(rows, indent=2))
    return rows


def run_fold_ensemble(config: ml_collections.ConfigDict, root: str | Path,
                      distill_config: ml_collections.ConfigDict | None = None,
                      folds: Sequence[int] | None = None, tiers: Sequence[str] | None = None,
                      submission: bool = False) -> dict:
    """Trains every run (`fold_runs`), then scores their ensemble into ROOT/evaluation;
    returns the evaluation's report."""
    from sensorium_jax.config_checks import validate_config
    from sensorium_jax.evaluation.run import evaluate

    root = Path(root).expanduser().resolve()
    runs = fold_runs(config, root, distill_config, folds)
    for run in runs:  # every run's config, before the first one trains for hours
        validate_config(run.config)
    root.mkdir(parents=True, exist_ok=True)
    rows = train_folds(runs, root)
    print(_table(rows))
    return evaluate(runs[0].workdir, ensemble=[run.workdir for run in runs[1:]], tiers=tiers,
                    out=root / "evaluation", submission=submission)


def _table(rows: Sequence[dict]) -> str:
    lines = ["| stage | fold | best validation correlation | at step |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['fold']} | {r['best_validation_correlation']:.4f} | {r['best_step']} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    from absl import flags, logging

    from sensorium_jax.errors import run_cli

    del argv
    FLAGS = flags.FLAGS
    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)
    folds = [int(k) for k in FLAGS.folds] if FLAGS.folds else None
    run_cli(run_fold_ensemble, FLAGS.config, FLAGS.workdir, FLAGS.distill_config, folds, FLAGS.tiers or None,
            FLAGS.submission)


def define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "The first stage's config file[:variant].", lock_config=True)
    config_flags.DEFINE_config_file("distill_config", None,
                                    "The distilled stage's config file[:variant] (none: no second stage).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Folder of the runs (fold_k, distilled_fold_k) and the evaluation.",
                        required=True)
    flags.DEFINE_list("folds", [], "Folds to train (default: all of data.n_folds).")
    flags.DEFINE_list("tiers", [], "Tiers the ensemble is scored on (default: every scored tier).")
    flags.DEFINE_bool("submission", False, "Also write the ensemble's competition files.")
    flags.DEFINE_bool("verbose", False, "Show the INFO logs of orbax, absl and JAX.")
    flags.mark_flag_as_required("config")


if __name__ == "__main__":
    from absl import app

    from sensorium_jax.config_checks import config_flags_parser

    define_flags()
    app.run(main, flags_parser=config_flags_parser(""))
