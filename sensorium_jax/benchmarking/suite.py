"""The accelerator suite: every zoo model's training step at competition scale (float32 and
bfloat16, remat off and on where the model has it), the input pipeline, the metric kernel next
to a plain read of the same bytes, and inference trials/s; one JSON and one markdown table.

    python -m sensorium_jax.bench --suite --out bench_suite            # one GPU, within ~8 min
    python -m sensorium_jax.bench --suite --tiny --out /tmp/suite      # CPU, tiny shapes, < ~1 min

Training steps run on synthetic batches already on the device (no store), built exactly as
`train.py` builds its step; the pipeline reads a store of competition-shaped random data
(8,000 neurons, 300-frame trials) written once into the output folder (the tiny preset store in
`--tiny`). A time budget skips what is left (recorded as skipped) rather than overrun.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sensorium_jax.benchmarking import machine, measure, networks
from sensorium_jax.benchmarking.networks import Shapes
from sensorium_jax.benchmarking.peaks import peak_flops, utilisation
from sensorium_jax.benchmarking.timing import flops_from_cost_analysis, summarize

MICE = 5  # the competition's training mice: a baseline batch is 8 clips of each
PAPER_MICE = 10  # the transformers' papers trained on all ten mice at once


@dataclasses.dataclass(frozen=True)
class Entry:
    """One zoo model: its config file, batch shapes and mice, and where its compute dtype and
    remat options live in `config.model` (None: the model has no such option)."""

    name: str
    config_file: str
    shapes: Shapes
    mice: int
    dtype_key: str | None = "compute_dtype"
    remat_key: str | None = None


FULL = (
    Entry("factorized", "factorized_baseline.py", Shapes(40, 80), MICE, remat_key="core.remat"),
    Entry("gru", "gru_baseline.py", Shapes(40, 80), MICE),
    Entry("dwiseneuro", "dwiseneuro.py", Shapes(32, 32), MICE, remat_key="remat"),
    Entry("ensemble", "ensemble_baseline.py", Shapes(40, 80), MICE, "member.compute_dtype", "member.core.remat"),
    Entry("quickstart", "quickstart.py", Shapes(12, 32, neurons=150), 3),
    # the papers' batches: ViV1T 6 clips of 150 frames of each mouse, Dynamic-V1FM 32 of 30 frames
    Entry("viv1t", "viv1t.py", Shapes(60, 150), PAPER_MICE, remat_key="remat"),
    Entry("dynamic_v1fm", "dynamic_v1fm.py", Shapes(32, 30), PAPER_MICE, "dtype", "core.remat"),
)
TINY = (
    Entry("factorized", "factorized_baseline.py", networks.TINY["factorized"], 2, remat_key="core.remat"),
    Entry("gru", "gru_baseline.py", networks.TINY["gru"], 2),
    Entry("dwiseneuro", "dwiseneuro.py", networks.TINY["dwiseneuro"], 2, remat_key="remat"),
    Entry("ensemble", "ensemble_baseline.py", networks.TINY["factorized"], 2, "member.compute_dtype",
          "member.core.remat"),
    Entry("quickstart", "quickstart.py", networks.TINY["quickstart"], 2),
    Entry("viv1t", "viv1t.py", networks.TINY["viv1t"], 2, remat_key="remat"),
    Entry("dynamic_v1fm", "dynamic_v1fm.py", networks.TINY["dynamic_v1fm"], 2, "dtype", "core.remat"),
)
TRAIN_FIELDS = ("model", "dtype", "remat", "clips", "frames", "neurons", "mice", "params", "compile_seconds",
                "step_seconds", "clips_per_second", "flops_per_step", "flops_per_second", "mfu",
                "program_memory_bytes", "final_loss")


@dataclasses.dataclass(frozen=True)
class Settings:
    tiny: bool
    steps: int
    warmup: int
    budget_s: float
    metric_shape: tuple[int, int, int]
    pipeline_batches: int
    inference_rounds: int


def settings(tiny: bool, budget_s: float | None = None) -> Settings:
    """Tiny: a few steps of tiny networks; full: enough steps for stable medians within ~8 min."""
    if tiny:
        return Settings(True, 2, 1, budget_s or 300.0, (4, 60, 200), 4, 1)
    return Settings(False, 10, 2, budget_s or 420.0, (10, 300, 8000), 20, 3)


def model_config(entry: Entry, tiny: bool) -> ml_collections.ConfigDict:
    """The entry's training config; tiny: its network shrunk (an ensemble's member, 2 members)."""
    from sensorium_jax.config import load_config

    config = load_config(networks.REPO / "configs" / entry.config_file)
    if tiny and entry.name == "ensemble":
        networks.shrink("factorized", config.model.member)
        config.model.members = 2
    elif tiny:
        networks.shrink(entry.name, config.model)
    return config


def program_memory_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries - donated aliases of a compiled step: what it needs on
    the device, per program (device peaks are cumulative over the whole process)."""
    try:
        m = compiled.memory_analysis()
    except (NotImplementedError, AttributeError, RuntimeError):
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def measure_training_step(entry: Entry, config: ml_collections.ConfigDict, dtype: str, remat: bool,
                          s: Settings) -> dict:
    """Compile time, step times, clips/s, FLOPs, MFU and program memory of one variant."""
    training = networks.jax_training(config, entry.shapes, entry.mice)
    started = time.perf_counter()
    compiled = training.step.lower(training.state, training.batch).compile()
    compile_seconds = time.perf_counter() - started
    flops = flops_from_cost_analysis(compiled.cost_analysis())
    flops = flops * jax.device_count() if flops else None
    state, times, loss = training.state, [], None
    for i in range(s.warmup + s.steps):
        start = time.perf_counter()
        state, metrics = compiled(state, training.batch)
        loss = float(jax.block_until_ready(metrics["loss"]))
        if i >= s.warmup:
            times.append(time.perf_counter() - start)
    step = summarize(times)
    peak = peak_flops(jax.devices()[0].device_kind, dtype)
    return {
        "model": entry.name, "dtype": dtype, "remat": remat, "clips": entry.shapes.clips,
        "frames": entry.shapes.frames, "neurons": entry.shapes.neurons, "mice": entry.mice,
        "params": training.params, "compile_seconds": compile_seconds, "step_seconds": step,
        "clips_per_second": entry.shapes.clips / step["median"], "flops_per_step": flops,
        "flops_per_second": flops / step["median"] if flops else None,
        "mfu": utilisation(flops, step["median"], jax.device_count(), peak) if flops else None,
        "program_memory_bytes": program_memory_bytes(compiled), "final_loss": loss,
    }


def variants(entry: Entry, tiny: bool = False) -> list[tuple[str, bool]]:
    """(dtype, remat) pairs: both dtypes, remat off and on where the model has the option.
    Tiny: float32 without remat, and the first model's bfloat16 with remat (every code path
    once, in a CPU minute: compilation dominates there)."""
    dtypes = ("float32", "bfloat16") if entry.dtype_key else ("float32",)
    remats = (False, True) if entry.remat_key else (False,)
    pairs = [(d, r) for d in dtypes for r in remats]
    if tiny:
        return pairs[:1] + (pairs[-1:] if entry is TINY[0] and len(pairs) > 1 else [])
    return pairs


def configured(entry: Entry, tiny: bool, dtype: str, remat: bool) -> ml_collections.ConfigDict:
    config = model_config(entry, tiny)
    if entry.dtype_key:
        networks.set_path(config.model, entry.dtype_key, dtype)
    if entry.remat_key:
        networks.set_path(config.model, entry.remat_key, remat)
    return config


class Budget:
    """Wall-clock budget: what starts after it is spent is recorded as skipped."""

    def __init__(self, seconds: float):
        self.seconds, self.started = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)

    def run(self, label: str, fn: Callable[[], dict], log: Callable[[str], None]) -> dict:
        """fn()'s figures, {"skipped": why} past the budget, or {"error": ...} if it failed
        (an out-of-memory variant must not stop the others)."""
        if self.left() <= 0:
            return {"skipped": "time budget spent"}
        log(f"suite: {label} ({self.left():.0f} s of budget left)")
        try:
            return fn()
        except Exception as error:  # noqa: BLE001 - recorded per variant, the suite goes on
            return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}


def pipeline_store(out: Path, tiny: bool, trials: int = 24) -> tuple[ml_collections.ConfigDict, object]:
    """(config, store) for the input pipeline: the tiny preset's store, or one mouse of
    competition-shaped random data (8,000 neurons, 300-frame trials) written once into `out`."""
    from sensorium_jax.config import load_config
    from sensorium_jax.data.datasets import open_training_store

    if tiny:
        config = load_config(networks.REPO / "configs" / "smoke.py")  # the tiny preset, cached once
        return config, open_training_store(config.data)
    config = load_config(networks.REPO / "configs" / "factorized_baseline.py")
    store_path = out / "pipeline_store"
    if not store_path.exists():  # the conversion writes it atomically
        write_competition_store(out / "pipeline_raw", store_path, trials)
    config.data.store = str(store_path)
    return config, open_training_store(config.data)


def write_competition_store(raw: Path, store_path: Path, trials: int, neurons: int = 8000, frames: int = 300) -> None:
    """One mouse folder of random data in the official 2023 layout, converted to a store."""
    import shutil

    from sensorium_jax.data.convert import convert
    from sensorium_jax.data.folder_writer import MouseFolderWriter

    rng = np.random.default_rng(0)
    folder = raw / "mouse0"
    writer = MouseFolderWriter(folder, kind="video", padded_length=frames)
    for i in range(trials):
        writer.add_trial(rng.integers(0, 256, (36, 64, frames)).astype(np.float32),
                         rng.gamma(0.5, 1.0, (neurons, frames)).astype(np.float32),
                         rng.normal(5, 1, (2, frames)).astype(np.float32), rng.normal(0, 3, (2, frames)).astype(np.float32),
                         "oracle" if i % 6 == 5 else "train", f"clip-{i}")
    writer.finish(np.arange(neurons), rng.uniform(0, 500, (neurons, 3)).astype(np.float32))
    convert([folder], store_path, progress=False)
    shutil.rmtree(raw)


def measure_plain_read(shape: tuple[int, int, int], rounds: int = 5) -> dict:
    """GB/s of one jitted pass that reads two device arrays of `shape` (a sum): the bandwidth
    the metric kernel, which reads the same bytes, is compared with."""
    kx, ky = jax.random.split(jax.random.key(1))
    a = jax.random.normal(kx, shape, jnp.float32)
    b = jax.random.normal(ky, shape, jnp.float32)
    read = jax.jit(lambda a, b: jnp.sum(a, axis=(0, 1)) + jnp.sum(b, axis=(0, 1)))
    read(a, b).block_until_ready()
    times = []
    for _ in range(max(rounds, 1)):
        start = time.perf_counter()
        read(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    seconds = summarize(times)
    return {"bytes": int(a.nbytes + b.nbytes), "seconds": seconds, "gb_per_second": (a.nbytes + b.nbytes) / seconds["median"] / 1e9}


def measure_metric(shape: tuple[int, int, int]) -> dict:
    kernel, plain = measure.measure_metric_kernel(shape), measure_plain_read(shape)
    return {"shape": list(shape), "kernel_gb_per_second": kernel["gb_per_second"],
            "plain_read_gb_per_second": plain["gb_per_second"],
            "kernel_over_plain_read": kernel["gb_per_second"] / plain["gb_per_second"]}


def measure_inference(entry: Entry, tiny: bool, rounds: int) -> dict:
    config = model_config(entry, tiny)
    frames = 2 * entry.shapes.frames if tiny else measure.TRIAL_FRAMES
    card = networks.make_card(entry.shapes, entry.mice)
    return {"model": entry.name, **measure.measure_inference_on_card(config, card, frames, rounds)}


def run_suite(out: Path, tiny: bool = False, budget_s: float | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Every measurement, written to out/suite.json and out/suite.md; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    s = settings(tiny, budget_s)
    budget = Budget(s.budget_s)
    entries = TINY if tiny else FULL
    report: dict = {"machine": machine.describe_machine(), "tiny": tiny, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "versions": versions(), "training": [], "inference": []}
    plan = [(e, d, r) for e in entries for d, r in variants(e, tiny)]
    first = [v for v in plan if v[1:] == ("float32", False)]  # every model once before any variant

    def train(entry: Entry, dtype: str, remat: bool) -> dict:
        label = f"{entry.name} {dtype}{' remat' if remat else ''}"
        row = budget.run(label, lambda: measure_training_step(entry, configured(entry, tiny, dtype, remat), dtype,
                                                               remat, s), log)
        return {"model": entry.name, "dtype": dtype, "remat": remat, **row}

    rows = {v: train(*v) for v in first}
    report["pipeline"] = budget.run("input pipeline", lambda: pipeline(out, tiny, s), log)
    report["metric_kernel"] = budget.run("metric kernel", lambda: measure_metric(s.metric_shape), log)
    for entry in entries[:1] if tiny else entries:
        report["inference"].append({"model": entry.name, **budget.run(
            f"{entry.name} inference", lambda: measure_inference(entry, tiny, s.inference_rounds), log)})
    rows.update({v: train(*v) for v in plan if v not in rows})
    report["training"] = [rows[v] for v in plan]
    report["peak_host_rss_bytes"] = machine.peak_host_rss_bytes()
    report["seconds"] = s.budget_s - budget.left()
    (out / "suite.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "suite.md").write_text(markdown(report))
    return report


def pipeline(out: Path, tiny: bool, s: Settings) -> dict:
    config, store = pipeline_store(out, tiny)
    return measure.measure_pipeline(config, store, s.pipeline_batches)


def versions() -> dict:
    import flax

    return {"jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else jax.__version__,
            "flax": flax.__version__}


def _num(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def markdown(report: dict) -> str:
    """The suite's table: one row per training variant, then the other measurements."""
    m = report["machine"]
    lines = [f"Device: {m['device_count']} x {m['device_kind']} ({m['backend']}), {report['date']}, "
             f"jax {report['versions']['jax']}, flax {report['versions']['flax']}"
             + (" (tiny shapes)" if report["tiny"] else ""), "",
             "| model | dtype | remat | batch | step ms | clips/s | TFLOP/s | MFU | program memory | compile s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["training"]:
        if "step_seconds" not in r:
            lines.append(f"| {r['model']} | {r['dtype']} | {'on' if r['remat'] else 'off'} | | "
                         f"{r.get('skipped') or r.get('error')} | | | | | |")
            continue
        mem = r["program_memory_bytes"]
        lines.append(
            f"| {r['model']} | {r['dtype']} | {'on' if r['remat'] else 'off'} | {r['clips']} x {r['frames']} | "
            f"{1e3 * r['step_seconds']['median']:.1f} | {r['clips_per_second']:.1f} | "
            f"{_num(r['flops_per_second'] and r['flops_per_second'] / 1e12, '.2f')} | "
            f"{_num(r['mfu'] and 100 * r['mfu'], '.1f')}{'%' if r['mfu'] else ''} | "
            f"{_bytes(mem)} | {r['compile_seconds']:.1f} |")
    p, k = report["pipeline"], report["metric_kernel"]
    lines += ["", "| measurement | figure |", "|---|---|",
              f"| input pipeline | {_num(p.get('clips_per_second'), '.1f')} clips/s |",
              f"| metric kernel | {_num(k.get('kernel_gb_per_second'), '.2f')} GB/s "
              f"({_num(k.get('kernel_over_plain_read'), '.2f')} x a plain read's "
              f"{_num(k.get('plain_read_gb_per_second'), '.2f')} GB/s) |"]
    for r in report["inference"]:
        lines.append(f"| {r['model']} inference | {_num(r.get('trials_per_second'), '.2f')} trials/s "
                     f"({r.get('trial_frames', '?')}-frame trials) |")
    return "\n".join(lines) + "\n"
