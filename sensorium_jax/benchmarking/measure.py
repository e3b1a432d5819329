"""The measurements: training steps, the input pipeline, the metric kernel, inference.

Each returns a plain dict of figures (seconds, counts, rates) so the command can print and
serialize them alike. Device work is synchronised with `block_until_ready` before a clock
is read, so asynchronous dispatch never hides time.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from sensorium_jax import metrics
from sensorium_jax.benchmarking.machine import peak_device_memory_bytes, peak_host_rss_bytes
from sensorium_jax.benchmarking.peaks import peak_flops, utilisation
from sensorium_jax.benchmarking.timing import flops_from_cost_analysis, summarize
from sensorium_jax.data.card import DatasetCard
from sensorium_jax.data.store import Store
from sensorium_jax.inference import Predictor
from sensorium_jax.models import build_model, kernels
from sensorium_jax.training.loop import build_training, device_batches, make_training_dataset
from sensorium_jax.training.mesh import make_data_mesh

TRIAL_FRAMES = 300  # a SENSORIUM 2023 trial


class CompileCounter:
    """Counts XLA compilations per jitted function name, from JAX's monitoring events.

    A jitted function's AOT `lower().compile()` and its later calls share one executable, so a
    stable step compiles exactly once; a second count means something changed shape,
    dtype or sharding between steps.
    """

    _counts: collections.Counter = collections.Counter()
    _registered = False

    @classmethod
    def count(cls, fun_name: str) -> int:
        cls._register()
        return cls._counts[fun_name]

    @classmethod
    def _register(cls) -> None:
        if cls._registered:
            return

        def listener(event: str, duration: float, fun_name: str = "", **kwargs) -> None:
            if event == "/jax/core/compile/backend_compile_duration":
                cls._counts[fun_name] += 1

        jax.monitoring.register_event_duration_secs_listener(listener)
        cls._registered = True


def native_form_flops(config: ml_collections.ConfigDict, store: Store, mesh: jax.sharding.Mesh,
                      batch: dict) -> float | None:
    """FLOPs of the step's arithmetic, counted on the `native` form's lowering (the whole
    program, before partitioning). XLA's cost analysis counts a loop's body once, and the CPU
    forms of `model.kernels` run their convolutions in loops over chunks of frames; the native
    form computes the same sums without them. (A model without the option has one form.)"""
    native = config.copy_and_resolve_references()
    native.model.kernels = "native"
    setup = build_training(native, store, mesh)
    try:
        return flops_from_cost_analysis(setup.train_step.lower(setup.state, batch).cost_analysis())
    except NotImplementedError:
        return None


def measure_training(config: ml_collections.ConfigDict, store: Store, steps: int, warmup: int = 2,
                     label: str = "train") -> dict:
    """Compile time, per-step times, throughput, FLOPs and memory of `config`'s train step."""
    mesh = make_data_mesh()
    setup = build_training(config, store, mesh)
    state, train_step = setup.state, setup.train_step
    batches = device_batches(setup.dataset, mesh, config)
    batch = next(batches)
    global_size = int(np.prod(batch["mouse"].shape))  # clips: [B] or an ensemble's [members, B]

    name = f"jit({getattr(train_step, '__name__', 'train_step')})"
    compiles_before = CompileCounter.count(name)
    started = time.perf_counter()
    lowered = train_step.lower(state, batch)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    if "kernels" not in config.model or kernels.resolve(config.model.kernels) == "native":
        try:  # XLA costs the SPMD-partitioned program: one device's share of the step
            flops_per_device = flops_from_cost_analysis(compiled.cost_analysis())
        except NotImplementedError:
            flops_per_device = None
        flops = flops_per_device * jax.device_count() if flops_per_device else None
    else:
        flops = native_form_flops(config, store, mesh, batch)
        flops_per_device = flops / jax.device_count() if flops else None

    for k in range(max(warmup, 1)):  # the first call reuses the executable compiled above
        if k:
            batch = next(batches)
        state, step_metrics = train_step(state, batch)
        jax.block_until_ready(step_metrics)

    waits, totals = [], []
    for _ in tqdm(range(steps), desc=label, unit="step", leave=False, dynamic_ncols=True):
        start = time.perf_counter()
        batch = next(batches)
        fetched = time.perf_counter()
        state, step_metrics = train_step(state, batch)
        jax.block_until_ready(step_metrics)
        waits.append(fetched - start)
        totals.append(time.perf_counter() - start)
    loss = float(step_metrics["loss"])

    step = summarize(totals)
    compute = summarize([t - w for t, w in zip(totals, waits)])
    kind = jax.devices()[0].device_kind
    dtype = compute_dtype(config.model)
    peak = peak_flops(kind, dtype)
    clips_per_second = global_size / step["median"]
    cache_size = getattr(train_step, "_cache_size", None)
    return {
        "global_batch": global_size,
        "clip_frames": int(config.data.clip_length),
        "steps": steps,
        "warmup_steps": max(warmup, 1),
        "lower_seconds": lowered_at - started,
        "compile_seconds": compiled_at - lowered_at,
        "step_seconds": step,
        "compute_seconds": compute,
        "input_wait_fraction": float(sum(waits) / sum(totals)),
        "clips_per_second": clips_per_second,
        "frames_per_second": clips_per_second * int(config.data.clip_length),
        "flops_per_step": flops,
        "flops_per_step_per_device": flops_per_device,
        "flops_per_second": flops / step["median"] if flops else None,
        "compute_dtype": dtype,
        "peak_flops_per_device": peak,
        "utilisation": utilisation(flops, step["median"], jax.device_count(), peak) if flops else None,
        "train_step_compilations": CompileCounter.count(name) - compiles_before,
        # Dispatch-cache entries: may exceed the compilations when a call's arguments differ in
        # metadata only (then the executable is reused after a re-trace, not recompiled).
        "jit_cache_entries": cache_size() if callable(cache_size) else None,
        "final_loss": loss,
        "peak_device_memory_bytes": peak_device_memory_bytes(),
        "peak_host_rss_bytes": peak_host_rss_bytes(),
    }


def compute_dtype(model_config: ml_collections.ConfigDict) -> str:
    """The dtype a model computes in (an ensemble's: its members'); float32 for models without
    the option."""
    while "member" in model_config:
        model_config = model_config.member
    return str(model_config.get("compute_dtype", "float32"))


def measure_pipeline(config: ml_collections.ConfigDict, store: Store, steps: int, warmup: int = 2) -> dict:
    """Training batches per second from the grain pipeline alone, no device work."""
    iterator: Iterator = iter(make_training_dataset(config, store))
    for _ in range(max(warmup, 1)):
        local = next(iterator)
    clips = int(np.prod(local["mouse"].shape))
    times = []
    for _ in tqdm(range(steps), desc="pipeline", unit="batch", leave=False, dynamic_ncols=True):
        start = time.perf_counter()
        next(iterator)
        times.append(time.perf_counter() - start)
    total = sum(times)
    return {
        "process_batch": clips,
        "batches": steps,
        "batch_seconds": summarize(times),
        "clips_per_second": clips * steps / total,
        "frames_per_second": clips * steps * int(config.data.clip_length) / total,
    }


def measure_metric_kernel(shape: tuple[int, int, int], rounds: int = 5) -> dict:
    """Single-trial correlation (update + finalize) over device-resident [trials, frames, neurons]."""
    trials, frames, neurons = shape
    kx, ky = jax.random.split(jax.random.key(0))
    responses = jax.random.normal(kx, shape, np.float32)
    predictions = 0.5 * responses + jax.random.normal(ky, shape, np.float32)
    mask = metrics.frame_mask(np.full(trials, frames), frames, 0)
    jax.block_until_ready((responses, predictions, mask))

    def run() -> None:
        stats = metrics.update_correlation_stats(metrics.init_correlation_stats(neurons), responses, predictions, mask)
        metrics.correlation_from_stats(stats).block_until_ready()

    run()  # compiles
    times = []
    for _ in range(max(rounds, 1)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    seconds = summarize(times)
    n_bytes = responses.nbytes + predictions.nbytes
    return {
        "shape": list(shape),
        "bytes": int(n_bytes),
        "seconds": seconds,
        "gb_per_second": n_bytes / seconds["median"] / 1e9,
    }


def measure_inference(config: ml_collections.ConfigDict, store: Store, rounds: int = 3,
                      trials_per_call: int | None = None) -> dict:
    """Whole trials per second through `Predictor.predict` (what `sensorium_jax.load` returns),
    on raw-unit inputs of `min(300, the store's longest trial)` frames."""
    longest = max(int(store.meta(m).lengths.max()) for m in store.mice)
    return measure_inference_on_card(config, store.card(), min(TRIAL_FRAMES, longest), rounds, trials_per_call)


def measure_inference_on_card(config: ml_collections.ConfigDict, card: DatasetCard, frames: int = TRIAL_FRAMES,
                              rounds: int = 3, trials_per_call: int | None = None) -> dict:
    """Trials of `frames` frames per second through `Predictor.predict` for the mice of `card`
    (a static model's: images per second, `frames` unused).

    Weights are freshly initialised: throughput does not depend on their values, and no
    checkpoint round trip is needed.
    """
    model = build_model(config.model, card, nnx.Rngs(config.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    predictor = Predictor(config, card, params, rest, graphdef, source="bench")
    b = int(trials_per_call or config.data.eval_batch_size)
    h, w = card.frame_shape
    lead = (b,) if predictor.static else (b, frames)  # a static model's trial is one image
    rng = np.random.default_rng(0)
    video = rng.uniform(0, 255, (*lead, h, w)).astype(np.float32)
    behavior = np.abs(rng.normal(size=(*lead, card.behavior_dim))).astype(np.float32)
    pupil = rng.normal(size=(*lead, 2)).astype(np.float32)
    mouse = card.names[0]

    predictor.predict(video, behavior, pupil, mouse)  # compiles
    times = []
    for _ in tqdm(range(max(rounds, 1)), desc="inference", unit="call", leave=False, dynamic_ncols=True):
        start = time.perf_counter()
        out = predictor.predict(video, behavior, pupil, mouse)  # numpy: already synchronised
        times.append(time.perf_counter() - start)
    seconds = summarize(times)
    return {
        "trials_per_call": b,
        "trial_frames": frames,
        "output_shape": list(out.shape),
        "call_seconds": seconds,
        "trials_per_second": b / seconds["median"],
    }
