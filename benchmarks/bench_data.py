"""Data layer benchmark (not a test): conversion time, pipeline vs raw tensorstore read rate, memory.

    python benchmarks/bench_data.py [--cache DIR] [--steps 48] [--clips-per-step 32]
    python benchmarks/bench_data.py --chunking    # the chunk/codec grid behind store.py's choice

For one full-scale mouse (8,000 neurons, 300-frame trials): the synthetic `full` preset
(`python -m sensorium_jax.data.synthetic --preset full --mice 1`) when that module exists,
else a same-size folder of random data written with `MouseFolderWriter`. It prints the
conversion time, the pipeline's rate for 80-frame clips next to the raw tensorstore rate of
the same clips (all reads of a step issued, then awaited) measured in the same run, and the
peak resident memory. Targets: pipeline >= 80% of raw and >= 200 clips/s on 2 CPU cores;
peak memory < 1.5 GB whatever the data set size.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_NEURONS, FRAMES, CLIP = 8000, 300, 80


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # ru_maxrss is KiB on Linux


def make_source(cache: Path, trials: int, kind: str) -> Path:
    """One full-scale mouse folder, generated once into the cache."""
    if kind == "auto":
        kind = "synthetic" if importlib.util.find_spec("sensorium_jax.data.synthetic") else "random"
    if kind == "synthetic":
        root = cache / "synthetic-full-1"
        if not (root / ".done").exists():
            shutil.rmtree(root, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "sensorium_jax.data.synthetic", "--out", str(root),
                            "--preset", "full", "--mice", "1"], check=True)
            (root / ".done").touch()
        return next(p for p in sorted(root.iterdir()) if p.is_dir() and (p / "data").is_dir())
    folder = cache / f"random-{trials}x{FRAMES}x{N_NEURONS}"
    if not (folder / ".done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"writing a random full-scale mouse folder ({trials} trials) into {folder} ...", flush=True)
        # In a child process, so that its memory does not count in this one's peak.
        subprocess.run([sys.executable, __file__, "--write-random-folder", str(folder), "--trials", str(trials)],
                       check=True)
        (folder / ".done").touch()
    return folder


def write_random_folder(folder: Path, trials: int) -> None:
    """Whole-number pixels and gamma-distributed activity, in the official 2023 layout."""
    from sensorium_jax.data.folder_writer import MouseFolderWriter

    rng = np.random.default_rng(0)
    writer = MouseFolderWriter(folder, kind="video", padded_length=FRAMES)
    for i in range(trials):
        tier = "oracle" if i % 10 == 9 else "train"
        video = rng.integers(0, 256, (36, 64, FRAMES)).astype(np.float32)
        responses = rng.gamma(0.5, 1.0, (N_NEURONS, FRAMES)).astype(np.float32)
        behavior = rng.normal(5, 1, (2, FRAMES)).astype(np.float32)
        pupil = rng.normal(0, 3, (2, FRAMES)).astype(np.float32)
        writer.add_trial(video, responses, behavior, pupil, tier, f"clip-{i}")
    writer.finish(np.arange(N_NEURONS), rng.uniform(0, 500, (N_NEURONS, 3)).astype(np.float32))


def raw_rate(store, plan: list[np.ndarray]) -> tuple[float, float]:
    """Clips/s and CPU ms/clip of bare tensorstore reads of the planned clips, all reads of a
    step issued, then awaited."""
    started, cpu = time.perf_counter(), time.process_time()
    for clips in plan:
        futures = []
        for mouse, trial, start in clips:
            arrays = store.arrays(int(mouse))
            futures += [arrays[key][int(trial), int(start) : int(start) + CLIP].read() for key in arrays]
        for future in futures:
            future.result()
    count = sum(len(c) for c in plan)
    return count / (time.perf_counter() - started), (time.process_time() - cpu) / count * 1e3


def pipeline_rate(dataset, first: int, steps: int) -> float:
    """Clips/s of steps first+1 .. first+steps in steady state: step `first` (untimed) starts
    the reader threads; closing the iterator afterwards stops its read-ahead."""
    iterator = iter(dataset)
    iterator.set_state({"next_index": first})
    next(iterator)
    started, cpu = time.perf_counter(), time.process_time()
    count = sum(next(iterator)["mouse"].shape[0] for _ in range(steps))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    iterator.close()
    return count / elapsed, cpu / count * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "sensorium_jax" / "bench_data")
    parser.add_argument("--source", choices=("auto", "synthetic", "random"), default="auto",
                        help="the synthetic full preset (auto: when installed) or a random folder")
    parser.add_argument("--trials", type=int, default=200, help="trials of the random mouse")
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--clips-per-step", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternating raw/pipeline measurements")
    parser.add_argument("--chunking", action="store_true", help="run the chunk/codec grid instead")
    parser.add_argument("--write-random-folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_random_folder:
        return write_random_folder(args.write_random_folder, args.trials)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.chunking:
        return chunking_grid(args.cache)

    from sensorium_jax.data.pipeline import make_sampler, make_train_dataset
    from sensorium_jax.data.convert import convert
    from sensorium_jax.data.store import open_store

    source = make_source(args.cache, args.trials, args.source)
    out = args.cache / "store"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    convert([source], out, progress=True)
    conversion = time.perf_counter() - started
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e9
    print(f"conversion: {conversion:.1f} s for {source.name} ({size:.2f} GB stored), "
          f"peak RSS so far {peak_rss_gb():.2f} GB", flush=True)

    store = open_store(out)
    sampler = make_sampler(store, clip_length=CLIP, seed=0, clips_per_mouse=args.clips_per_step)
    steps, span = args.steps, args.steps + 1
    plan = [sampler(step) for step in range(args.rounds * span)]
    raw_rate(store, plan)  # warm the page cache with exactly these clips
    dataset = make_train_dataset(store, clip_length=CLIP, clips_per_mouse=args.clips_per_step, seed=0,
                                 read_threads=args.threads, prefetch=args.prefetch)
    raws, pipes = [], []
    for r in range(args.rounds):  # alternated, so that load from elsewhere hits both alike
        raws.append(raw_rate(store, plan[r * span + 1 : (r + 1) * span]))
        pipes.append(pipeline_rate(dataset, r * span, steps))  # the same clips
    (raw, raw_cpu), (piped, pipe_cpu) = np.median(raws, axis=0), np.median(pipes, axis=0)
    best_raw, best_pipe = max(r for r, _ in raws), max(p for p, _ in pipes)
    print(f"raw tensorstore reads of the same clips: median {raw:.0f} clips/s, best {best_raw:.0f}, "
          f"{raw_cpu:.2f} CPU ms/clip ({args.rounds} rounds of {steps * args.clips_per_step} clips)")
    print(f"pipeline ({args.threads} read threads, prefetch {args.prefetch}, {args.clips_per_step} clips/step, "
          f"{CLIP} frames, normalized, padded): median {piped:.0f} clips/s, best {best_pipe:.0f}, "
          f"{pipe_cpu:.2f} CPU ms/clip; {100 * piped / raw:.0f}% of raw (medians), "
          f"{100 * best_pipe / best_raw:.0f}% (best)")
    print("per round (raw, pipeline clips/s): " + ", ".join(f"({r:.0f}, {p:.0f})" for (r, _), (p, _) in zip(raws, pipes)))
    print(f"peak resident memory (conversion + reading): {peak_rss_gb():.2f} GB")


def chunking_grid(cache: Path) -> None:
    """Random 80-frame clips of [24, 300, N] float32 responses, per chunk shape and codec.

    The responses are the first 24 trials of the benchmark store when it exists (the
    synthetic mouse), else calcium-like random traces. Prints the compression ratio, the best
    clips/s of three passes and the least CPU time per clip (steadier on a shared machine).
    """
    import tensorstore as ts

    from sensorium_jax.data.store import open_store

    trials = 24
    if (cache / "store" / "store.json").exists():
        store = open_store(cache / "store")
        responses = store.arrays(0)["responses"][:trials, :FRAMES].read().result()
        source = f"{store.mice[0]} responses"
    else:
        rng = np.random.default_rng(0)
        responses = rng.gamma(0.5, 1.0, size=(trials, FRAMES, N_NEURONS)).astype(np.float32)
        for t in range(1, FRAMES):  # slow calcium-like decay
            responses[:, t] = 0.8 * responses[:, t - 1] + 0.2 * responses[:, t]
        source = "calcium-like random traces"
    n = responses.shape[-1]
    print(f"{source}: [{trials}, {FRAMES}, {n}] float32; 512 random {CLIP}-frame clips, 64 reads issued at once")
    raw = [{"name": "bytes", "configuration": {"endian": "little"}}]
    codecs = {
        "raw": raw,
        "zstd1": raw + [{"name": "zstd", "configuration": {"level": 1}}],
        "blosc-lz4-shuffle": raw + [{"name": "blosc", "configuration": {
            "cname": "lz4", "clevel": 5, "shuffle": "shuffle", "typesize": 4, "blocksize": 0}}],
    }
    picks = np.random.default_rng(1)
    clips = [(int(picks.integers(trials)), int(picks.integers(0, FRAMES - CLIP + 1))) for _ in range(512)]
    context = ts.Context({"cache_pool": {"total_bytes_limit": 0}})
    for tc in (10, 20, 40, 100, 300):
        for name, codec in codecs.items():
            path = cache / f"grid-{tc}-{name}"
            shutil.rmtree(path, ignore_errors=True)
            spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)},
                    "metadata": {"shape": [trials, FRAMES, n], "data_type": "float32", "fill_value": 0,
                                 "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, tc, n]}},
                                 "codecs": codec}}
            array = ts.open(spec, create=True, context=context).result()
            array.write(responses).result()
            stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            array[:].read().result()  # page cache warm
            best, cpu = 0.0, float("inf")
            for _ in range(3):
                started, cpu_started = time.perf_counter(), time.process_time()
                for b in range(0, len(clips), 64):
                    futures = [array[t, s : s + CLIP].read() for t, s in clips[b : b + 64]]
                    for future in futures:
                        future.result()
                best = max(best, len(clips) / (time.perf_counter() - started))
                cpu = min(cpu, (time.process_time() - cpu_started) / len(clips) * 1e3)
            print(f"chunk [1, {tc:3d}, {n}] {name:18s} compression x{responses.nbytes / stored:.2f}  "
                  f"{best:5.0f} clips/s  {cpu:.2f} CPU ms/clip", flush=True)
            shutil.rmtree(path)


if __name__ == "__main__":
    main()
