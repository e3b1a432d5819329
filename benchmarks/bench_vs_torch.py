"""Our training step against the same network in PyTorch, timed alternately on identical shapes.

    python benchmarks/bench_vs_torch.py                       # factorized baseline, competition shapes
    python benchmarks/bench_vs_torch.py --model all --steps 3
    python benchmarks/bench_vs_torch.py --model gru --clips 2 --threads 2 --json vs_torch.json
    python benchmarks/bench_vs_torch.py --model all --tiny --steps 2   # seconds, for tests

Shapes: one mouse of 8,000 neurons, 36 x 64 frames, 8 clips of the model's clip length (80
frames for the baselines, 32 for DwiseNeuro; the quickstart's own 4 clips of 32 frames and
1,000 neurons); `--clips` / `--neurons` change them. The PyTorch side is the reference modules
(`sensorium_jax.port_torch.reference`, torch needed) in training mode with AdamW and the
Poisson loss; ours is the step `train.py` runs. Each side runs in its own worker process,
stepped in turn (see sensorium_jax/benchmarking/vs_torch.py), so both peaks are separate.
Printed per model: s/step and clips/s of both, the speed ratio (PyTorch's step time over ours:
1 = as fast), the memory ratio (our peak resident memory over PyTorch's) and both parameter
counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sensorium_jax.benchmarking.networks import MODELS, shapes_for
from sensorium_jax.benchmarking.vs_torch import Spec, machine_load, run_comparison

TARGET_SPEED, TARGET_MEMORY = 0.8, 1.5


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="factorized", choices=[*MODELS, "all"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side after the first")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPUs each side may use (torch.set_num_threads and XLA's pool); 0: all")
    parser.add_argument("--tiny", action="store_true", help="tiny networks and shapes (seconds; tests)")
    parser.add_argument("--clips", type=int, default=0, help="clips per batch (0: the model's default)")
    parser.add_argument("--neurons", type=int, default=0, help="neurons of the mouse (0: the default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="our model config override, e.g. kernels=native or core.remat=true")
    parser.add_argument("--json", default="", help="write the reports to this file")
    return parser.parse_args(argv)


def overrides(pairs: list[str]) -> dict:
    """['kernels=native', 'core.remat=true'] -> {'kernels': 'native', 'core.remat': True}."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def format_report(r: dict) -> str:
    """One model's comparison as a few lines."""
    s = r["shapes"]
    lines = [f"{r['model']}: {s['clips']} clips x {s['frames']} frames of {s['height']}x{s['width']}, "
             f"{s['neurons']:,} neurons" + (f", ours with {r['overrides']}" if r["overrides"] else "")]
    for side, name in (("jax", "ours   "), ("torch", "PyTorch")):
        x = r[side]
        t = x["step_seconds"]
        lines.append(f"  {name} {t['median']:8.3f} s/step [{t['min']:.3f}-{t['max']:.3f}]  "
                     f"{x['clips_per_second']:7.2f} clips/s  peak RSS {gib(x['peak_rss_bytes'])}  "
                     f"params {x['params']:,}  ({x['version']}, {x['threads']} threads)")
    speed, memory = r["speed_ratio"], r["memory_ratio"]
    lines.append(f"  speed ratio {speed:.2f} (target >= {TARGET_SPEED}; per step "
                 f"{', '.join(f'{v:.2f}' for v in r['paired_speed_ratios'])}), memory ratio {memory:.2f} "
                 f"(target <= {TARGET_MEMORY}), parameters {'match' if r['params_match'] else 'DIFFER'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    models = MODELS if args.model == "all" else (args.model,)
    reports = []
    for model in models:
        spec = Spec(model, shapes_for(model, args.tiny, args.clips or None, args.neurons or None), args.tiny,
                    overrides(args.set), args.threads)
        report = run_comparison(spec, args.steps, args.warmup, log=lambda m: print(m, file=sys.stderr, flush=True))
        report["load_average"] = machine_load()
        reports.append(report)
        print(format_report(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return reports


if __name__ == "__main__":
    main()
