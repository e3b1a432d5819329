"""Scores trained models with the SENSORIUM metrics and writes reports, plots and submissions.

    python evaluate.py --workdir runs/quickstart
    python evaluate.py --workdir runs/a --ensemble runs/b runs/c --submission
    python evaluate.py --workdir runs/a --store /data/store --tiers oracle live_test_main
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="training workdir or checkpoint folder")
    parser.add_argument("--ensemble", nargs="*", default=[], help="more workdirs whose predictions are averaged in")
    parser.add_argument("--store", default="", help="store to score on (default: the one the model trained on)")
    parser.add_argument("--tiers", nargs="*", default=None, help="tiers to evaluate (default: all but train/none)")
    parser.add_argument("--out", default="", help="output folder (default: WORKDIR/evaluation)")
    parser.add_argument("--burn-in", type=int, default=None, help="frames dropped per trial (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--submission", action="store_true", help="also write the competition parquet/zip files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from sensorium_jax.data.datasets import open_training_store
    from sensorium_jax.data.store import open_store
    from sensorium_jax.evaluation.report import run_evaluation
    from sensorium_jax.inference import EnsemblePredictor, load

    members = [load(path) for path in [args.workdir, *args.ensemble]]
    predictor = members[0] if len(members) == 1 else EnsemblePredictor(members)
    config = members[0].config
    store = open_store(args.store) if args.store else open_training_store(config.data)
    burn_in = args.burn_in if args.burn_in is not None else int(config.train.burn_in)
    out = Path(args.out) if args.out else Path(args.workdir) / "evaluation"
    report = run_evaluation(predictor, store, out, tiers=args.tiers, burn_in=burn_in,
                            batch_size=args.batch_size, submission=args.submission)
    print((out / "report.md").read_text())
    print(f"report: {out / 'report.json'}")
    return report


if __name__ == "__main__":
    from sensorium_jax.errors import run_cli

    run_cli(main)
