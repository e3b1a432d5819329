"""An ensemble of N members trained as one program against N sequential runs of one member.

    python benchmarks/bench_ensemble.py [--members 3] [--steps 10] [--config configs/zoo_small.py:ensemble]

Both sides use the trainer's own step and pipeline on the same batches. A sequential run of
one member costs its compile plus its steps; N of them cost N times that. The program with all
members compiles once and steps once per batch. Prints both and their ratio.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sensorium_jax import config as config_file
from sensorium_jax.benchmarking.measure import measure_training
from sensorium_jax.data.datasets import open_training_store


def load_config(spec: str):
    """`path[:variant]` as `--config` takes it; the path is relative to the current folder."""
    path, _, arg = spec.partition(":")
    return config_file.load_config(Path(path).absolute(), arg or None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "zoo_small.py:ensemble"))
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--run-steps", type=int, default=0,
                        help="steps of a whole run for the totals (default: the config's train.steps)")
    args = parser.parse_args(argv)

    ensemble = load_config(args.config)
    if ensemble.model.name != "ensemble":
        raise SystemExit(f"{args.config} is not an ensemble config (model {ensemble.model.name!r})")
    ensemble.model.members = args.members
    single = load_config(args.config)
    single.model = ensemble.model.member
    store = open_training_store(ensemble.data)
    one = measure_training(single, store, args.steps, label="one member")
    all_ = measure_training(ensemble, store, args.steps, label=f"{args.members} members")
    run_steps = args.run_steps or int(ensemble.train.steps)

    def run_seconds(m: dict) -> float:
        return m["lower_seconds"] + m["compile_seconds"] + run_steps * m["step_seconds"]["median"]

    sequential = args.members * run_seconds(one)
    together = run_seconds(all_)
    rows = [
        ("one member", one["step_seconds"]["median"], one["compile_seconds"] + one["lower_seconds"]),
        (f"{args.members} members, one program", all_["step_seconds"]["median"],
         all_["compile_seconds"] + all_["lower_seconds"]),
    ]
    print(f"\n{'':<28}{'step s':>10}{'compile s':>12}")
    for name, step, compile_s in rows:
        print(f"{name:<28}{step:>10.3f}{compile_s:>12.1f}")
    step_ratio = args.members * one["step_seconds"]["median"] / all_["step_seconds"]["median"]
    print(f"\nper step: {args.members} x one member / one program = {step_ratio:.2f}x")
    print(f"a {run_steps}-step run: {args.members} sequential runs {sequential:.0f} s, one program "
          f"{together:.0f} s: {sequential / together:.2f}x faster")
    return {"step_ratio": step_ratio, "run_ratio": sequential / together}


if __name__ == "__main__":
    main()
