"""Our training step and the same network's in PyTorch, timed alternately on identical shapes.

Each side runs in its own worker process (so each peak resident memory is that side's alone:
`ru_maxrss` of a process holding one framework), and the parent drives them in turn, one step
at a time, alternating which goes first (ABBA): both see the same machine load, which on a
shared machine matters more than either absolute figure. Each worker times its own step
(the result synchronised: `block_until_ready` on ours, a host float on PyTorch's).

    python -m sensorium_jax.benchmarking.vs_torch worker --side jax|torch --spec JSON
is the worker's entry point; `run_comparison` is the parent's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

from sensorium_jax.benchmarking.networks import Shapes
from sensorium_jax.benchmarking.timing import summarize

SIDES = ("jax", "torch")
PREFIX = "@@vs_torch "  # marks protocol lines among whatever the frameworks print


@dataclasses.dataclass(frozen=True)
class Spec:
    """What both workers build: a model of `CONFIG_FILES`, its shapes, our config overrides
    (dotted paths under `config.model`) and the CPU threads each side may use."""

    model: str
    shapes: Shapes
    tiny: bool = False
    overrides: dict = dataclasses.field(default_factory=dict)
    threads: int = 0  # 0: every CPU of the machine

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        raw = json.loads(text)
        return cls(**{**raw, "shapes": Shapes(**raw["shapes"])})


# --------------------------------------------------------------------------- worker


def limit_threads(threads: int) -> None:
    """Pins this process to its first `threads` CPUs before a framework starts: XLA:CPU and
    PyTorch size their thread pools from the CPUs a process may run on."""
    if threads <= 0 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(len(cpus))


def build_side(side: str, spec: Spec) -> tuple[int, Callable[[], float], dict]:
    """(parameters, step, facts about the side's runtime) of one side, in this process."""
    from sensorium_jax.benchmarking import networks

    if side == "jax":
        import sensorium_jax  # noqa: F401  (its backend flags, before JAX's backends start)

        params, step = networks.jax_training_step(spec.model, spec.shapes, spec.tiny, spec.overrides)
        import jax

        facts = {"version": f"jax {jax.__version__}", "xla_flags": os.environ.get("XLA_FLAGS", ""),
                 "threads": len(os.sched_getaffinity(0))}
        return params, step, facts
    import torch

    threads = spec.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    params, step = networks.torch_training_step(spec.model, spec.shapes, spec.tiny)
    return params, step, {"version": f"torch {torch.__version__}", "threads": torch.get_num_threads()}


def peak_rss_bytes() -> int:
    """This process's peak resident memory (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def say(message: dict) -> None:
    print(PREFIX + json.dumps(message), flush=True)


def serve(side: str, spec: Spec) -> None:
    """The worker: build, take the first (compiling) step, then one step per 'step' line on
    stdin; 'quit' reports the peak memory."""
    limit_threads(spec.threads)
    started = time.perf_counter()
    params, step, facts = build_side(side, spec)
    built = time.perf_counter()
    loss = step()
    say({"ready": True, "params": params, "build_seconds": built - started,
         "first_step_seconds": time.perf_counter() - built, "loss": loss, **facts})
    for line in sys.stdin:
        if line.strip() == "step":
            start = time.perf_counter()
            loss = step()
            say({"seconds": time.perf_counter() - start, "loss": loss})
        elif line.strip() == "quit":
            break
    say({"peak_rss_bytes": peak_rss_bytes()})


# --------------------------------------------------------------------------- parent


class Worker:
    """One side's worker process, driven line by line."""

    def __init__(self, side: str, spec: Spec):
        self.side = side
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sensorium_jax.benchmarking.vs_torch", "worker", "--side", side,
             "--spec", spec.to_json()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def read(self) -> dict:
        """The next protocol message; an error naming the side if the worker died."""
        for line in self.process.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        code = self.process.wait()
        raise RuntimeError(f"the {self.side} worker stopped (exit {code}) before answering; its errors are above")

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def step(self) -> dict:
        self.send("step")
        return self.read()

    def close(self) -> dict:
        self.send("quit")
        message = self.read()
        self.process.stdin.close()
        self.process.wait()
        return message

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_comparison(spec: Spec, steps: int, warmup: int = 1, log: Callable[[str], None] = lambda s: None) -> dict:
    """Both sides' figures for `spec`: `warmup` untimed then `steps` timed steps each, in
    alternation; the workers are built one after the other so neither's compilation slows
    the other's."""
    workers: dict[str, Worker] = {}
    try:
        ready = {}
        for side in SIDES:
            log(f"{spec.model}: building the {side} side")
            workers[side] = Worker(side, spec)
            ready[side] = workers[side].read()
        times: dict[str, list[float]] = {side: [] for side in SIDES}
        losses: dict[str, float] = {}
        for i in range(warmup + steps):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            for side in order:
                message = workers[side].step()
                losses[side] = message["loss"]
                if i >= warmup:
                    times[side].append(message["seconds"])
            if i >= warmup:
                log(f"{spec.model}: step {i - warmup + 1}/{steps}: ours {times['jax'][-1]:.3f} s, "
                    f"PyTorch {times['torch'][-1]:.3f} s")
        peaks = {side: workers[side].close()["peak_rss_bytes"] for side in SIDES}
    finally:
        for worker in workers.values():
            worker.kill()
    return summarize_comparison(spec, ready, times, peaks, losses)


def summarize_comparison(spec: Spec, ready: dict, times: dict, peaks: dict, losses: dict) -> dict:
    """The report of one model: per side its step times, clips/s, peak memory, parameters;
    and the ratios the targets are stated in."""
    sides = {}
    for side in SIDES:
        seconds = summarize(times[side])
        sides[side] = {
            "step_seconds": seconds,
            "clips_per_second": spec.shapes.clips / seconds["median"],
            "peak_rss_bytes": peaks[side],
            "params": ready[side]["params"],
            "build_seconds": ready[side]["build_seconds"],
            "first_step_seconds": ready[side]["first_step_seconds"],
            "final_loss": losses[side],
            **{k: ready[side][k] for k in ("version", "threads", "xla_flags") if k in ready[side]},
        }
    ours, theirs = sides["jax"], sides["torch"]
    return {
        "model": spec.model,
        "shapes": dataclasses.asdict(spec.shapes),
        "tiny": spec.tiny,
        "overrides": spec.overrides,
        "steps": len(times["jax"]),
        "jax": ours,
        "torch": theirs,
        # per-step pairs: each ratio from steps taken back to back, so load changes cancel
        "paired_speed_ratios": [t / j for j, t in zip(times["jax"], times["torch"])],
        "speed_ratio": theirs["step_seconds"]["median"] / ours["step_seconds"]["median"],
        "memory_ratio": ours["peak_rss_bytes"] / theirs["peak_rss_bytes"],
        "params_match": ours["params"] == theirs["params"],
    }


def machine_load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sensorium_jax.benchmarking.vs_torch")
    parser.add_argument("role", choices=["worker"])
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    serve(args.side, Spec.from_json(args.spec))


if __name__ == "__main__":
    main(sys.argv[1:])
