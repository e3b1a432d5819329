"""Scores trained models with the SENSORIUM metrics and writes reports, plots and submissions.

    python evaluate.py --workdir runs/quickstart
    python evaluate.py --workdir runs/a --ensemble runs/b,runs/c --submission
    python evaluate.py --workdir runs/a --store /data/store --tiers oracle,live_test_main
    python evaluate.py --workdir runs/dwiseneuro --window_rule centred --out runs/dwiseneuro/eval_centred

Every registered evaluator (sensorium_jax.evaluation.evaluators) is computed on every tier it
applies to. Paths are taken relative to the current folder. Another store's mice are matched to
the model's by name and their neurons by unit id; mice or neurons the model does not know are
refused (exit status 2).

Video stores (SENSORIUM 2023) are scored by single-trial correlation (after the burn-in),
correlation to average and FEVE per tier and pooled; their submission (WORKDIR/evaluation/
submission/) is the 2023 one: `predictions_live_main.parquet.brotli`,
`predictions_final_main.parquet.brotli` (zipped in `submission_main.zip`) and the bonus
track's two files (`submission_bonus.zip`), always without the competition's 50 burn-in frames.

Static stores (SENSORIUM 2022 images, one frame per trial, no burn-in) are scored by
single-trial correlation, correlation to the average over the repeats of each image and FEVE
(averaged over neurons with FEV >= 0.15). Their submission is the 2022 starter kit's CSV, one
row per trial with `trial_indices`, `image_ids`, `prediction` and `neuron_ids`:
`submission/<track>/<mouse>/submission_file_live_test.csv` (tier "test") and
`submission/<track>/<mouse>/submission_file_final_test.csv` (tier "final_test"), where
`<track>` is `sensorium` (image only) or `sensorium_plus` (a model reading behaviour or pupil).

Either way the report says which tiers and mice the submission holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags, logging

from sensorium_jax.evaluation.run import evaluate

__all__ = ["evaluate"]  # `runpy.run_path("evaluate.py")["evaluate"]` scores from Python
FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags; defined only when run as a program, so that loading this file
    as a module (`runpy.run_path(...)["evaluate"]`) any number of times defines none."""
    flags.DEFINE_string("workdir", None, "Training workdir or checkpoint folder.", required=True)
    flags.DEFINE_list("ensemble", [], "More workdirs whose predictions are averaged in (comma separated).")
    flags.DEFINE_string("store", "", "Store to score on (default: the one the model trained on).")
    flags.DEFINE_list("tiers", [], "Tiers to evaluate, comma separated (default: every scored tier).")
    flags.DEFINE_string("out", "", "Output folder (default: WORKDIR/evaluation).")
    flags.DEFINE_integer("burn_in", None, "Frames dropped per trial (default: the training config's).")
    flags.DEFINE_integer("batch_size", 8, "Trials per prediction batch.")
    flags.DEFINE_bool("submission", False, "Also write the competition parquet/zip files.")
    flags.DEFINE_enum("window_rule", "", ["", "centred", "stride1_mean"],
                      "How models with a fixed clip length combine windows over a trial (default: the "
                      "model's own): 'centred' or 'stride1_mean'.")
    flags.DEFINE_bool("verbose", False, "Show the INFO logs of orbax, absl and JAX.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)  # orbax logs every read at INFO
    from sensorium_jax.errors import run_cli

    run_cli(evaluate, FLAGS.workdir, ensemble=FLAGS.ensemble, store=FLAGS.store, tiers=FLAGS.tiers or None,
            out=FLAGS.out, burn_in=FLAGS.burn_in, batch_size=FLAGS.batch_size, submission=FLAGS.submission,
            window_rule=FLAGS.window_rule)


if __name__ == "__main__":
    define_flags()
    app.run(main)
