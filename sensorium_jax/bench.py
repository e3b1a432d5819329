"""Throughput benchmark: training steps, input pipeline, metric kernel and inference.

    python -m sensorium_jax.bench --config configs/smoke.py --steps 20 --json bench.json
    python -m sensorium_jax.bench --config configs/quickstart.py --sweep batch_size=2,4,8
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m sensorium_jax.bench ...
    python -m sensorium_jax.bench --suite --out bench_suite    # the accelerator suite (one GPU, ~8 min)
    python -m sensorium_jax.bench --suite --tiny --out /tmp/s  # the same, tiny shapes, on CPU in ~1 min

Runs on every device JAX sees, with the same model, state, step and data pipeline as
`train.py`. Prints a table; `--json OUT` writes the same figures with the machine and config
(and, for a sweep, a plot of throughput, step time and memory per value next to it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from sensorium_jax.config_checks import config_flags_parser

DEFAULT_CONFIG = "configs/quickstart.py"
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file.", lock_config=True)
flags.DEFINE_integer("steps", 20, "Timed training steps (and pipeline batches) after the warm-up.")
flags.DEFINE_integer("warmup", 2, "Untimed training steps after compilation.")
flags.DEFINE_string("json", "", "Write the figures as JSON to this file.")
flags.DEFINE_string("sweep", "", "key=v1,v2,...: one training measurement per value "
                    "(batch_size: the global batch's knob).")
flags.DEFINE_string("metric_shape", "10,300,8000", "trials,frames,neurons of the metric kernel's synthetic data.")
flags.DEFINE_bool("suite", False, "Run the accelerator suite instead (every zoo model at competition "
                  "scale, pipeline, metric kernel, inference; see sensorium_jax/benchmarking/suite.py); "
                  "--config is not used.")
flags.DEFINE_bool("tiny", False, "With --suite: tiny networks and shapes (CPU, tests).")
flags.DEFINE_string("out", "bench_suite", "With --suite: folder for suite.json and suite.md.")
flags.DEFINE_float("budget_s", 0.0, "With --suite: seconds after which what is left is skipped (0: the default).")
flags.DEFINE_integer("inference_rounds", 3, "Timed predict calls after the compiling one "
                     "(0: skip inference, for models whose whole trials take minutes here).")


def run_bench(config, config_path: str, overrides: list[str], *, steps: int, warmup: int, sweep: str,
              metric_shape: str, inference_rounds: int) -> dict:
    """All measurements of one run, as the dict printed and written as JSON."""
    from sensorium_jax.benchmarking import machine, measure
    from sensorium_jax.benchmarking.sweep import parse_sweep, with_value
    from sensorium_jax.config_checks import validate_config
    from sensorium_jax.data.datasets import open_training_store
    from sensorium_jax.errors import InputDataError

    if steps < 1:
        raise InputDataError("--steps", "steps", "at least 1", steps)
    try:
        shape = tuple(int(v) for v in metric_shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise InputDataError("--metric_shape", "metric_shape", "three positive integers trials,frames,neurons",
                             metric_shape)

    validate_config(config)
    plan = parse_sweep(sweep, config) if sweep else None
    store = open_training_store(config.data)
    report: dict = {
        "machine": machine.describe_machine(),
        "config_path": config_path,
        "config_name": Path(config_path).stem,
        "overrides": overrides,
        "steps": steps,
        "training": None,
        "sweep": None,
    }
    if plan:
        rows = []
        for value in plan.values:
            swept = with_value(config, plan.key, value)
            rows.append({"value": value, "training": measure.measure_training(
                swept, store, steps, warmup, label=f"{plan.name}={value}")})
        report["sweep"] = {"name": plan.name, "key": plan.key, "rows": rows}
    else:
        report["training"] = measure.measure_training(config, store, steps, warmup)
    report["pipeline"] = measure.measure_pipeline(config, store, steps, warmup)
    report["metric_kernel"] = measure.measure_metric_kernel(shape)
    report["inference"] = (
        measure.measure_inference(config, store, rounds=inference_rounds) if inference_rounds > 0 else None
    )
    report["peak_device_memory_bytes"] = machine.peak_device_memory_bytes()
    report["peak_host_rss_bytes"] = machine.peak_host_rss_bytes()
    return report


def main(argv: list[str]) -> None:
    del argv
    from sensorium_jax.benchmarking.report import format_report
    from sensorium_jax.errors import run_cli

    if FLAGS.suite:
        from sensorium_jax.benchmarking.suite import run_suite

        report = run_suite(Path(FLAGS.out), tiny=FLAGS.tiny, budget_s=FLAGS.budget_s or None,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
        print((Path(FLAGS.out) / "suite.md").read_text())
        print(f"wrote {Path(FLAGS.out) / 'suite.json'} ({report['seconds']:.0f} s)", file=sys.stderr)
        return
    config_flag = FLAGS["config"]
    overrides = [f"--config.{k}={v}" for k, v in config_flags.get_override_values(config_flag).items()]
    report = run_cli(
        run_bench, FLAGS.config, config_flags.get_config_filename(config_flag), overrides,
        steps=FLAGS.steps, warmup=FLAGS.warmup, sweep=FLAGS.sweep, metric_shape=FLAGS.metric_shape,
        inference_rounds=FLAGS.inference_rounds,
    )
    print(format_report(report))
    if FLAGS.json:
        out = Path(FLAGS.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {out}", file=sys.stderr)
        if report["sweep"]:
            from sensorium_jax.benchmarking.plots import sweep_figure

            print(f"wrote {sweep_figure(report, out.with_suffix('.png'))}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main, flags_parser=config_flags_parser(DEFAULT_CONFIG))
