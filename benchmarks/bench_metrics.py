"""Throughput of the metric kernels next to float64 NumPy and a plain read, in one run.

Default size: 10 trials x 300 frames x 8,000 neurons (2 stimuli x 5 repeats), burn-in 50.
Kernel timings start from device-resident arrays, include init and finalize, run after a
warm-up and end with block_until_ready; the best of interleaved rounds is reported. GB/s
counts the bytes of responses + predictions.

    python benchmarks/bench_metrics.py [--trials 10 --frames 300 --neurons 8000 --repeats 5]
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from absl import app, flags

from sensorium_jax import metrics as M

FLAGS = flags.FLAGS
flags.DEFINE_integer("trials", 10, "Trials of synthetic responses.")
flags.DEFINE_integer("frames", 300, "Frames per trial.")
flags.DEFINE_integer("neurons", 8000, "Neurons.")
flags.DEFINE_integer("repeats", 5, "Repeats per stimulus.")
flags.DEFINE_integer("batch_size", 0, "Trials per kernel call; 0 = all.")
flags.DEFINE_integer("burn_in", 50, "Frames dropped per trial before scoring.")
flags.DEFINE_integer("rounds", 10, "Timing rounds (the best is kept).")


def best_ms(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best wall time of each function in ms, after one warm-up call each.

    Rounds interleave the functions, so a shared machine's load shifts all of them alike.
    """
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], 1e3 * (time.perf_counter() - start))
    return best


def numpy_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Straightforward float64 two-pass Pearson over axis 0."""
    dx, dy = x - x.mean(axis=0), y - y.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dx * dy).sum(0) / np.sqrt((dx * dx).sum(0) * (dy * dy).sum(0))
    return np.nan_to_num(r)


def numpy_single_trial(x: np.ndarray, y: np.ndarray, burn_in: int) -> np.ndarray:
    n = x.shape[-1]
    scored = lambda v: v[:, burn_in:].reshape(-1, n).astype(np.float64)  # noqa: E731
    return numpy_pearson(scored(x), scored(y))


def numpy_to_average(x: np.ndarray, y: np.ndarray, slots: np.ndarray, burn_in: int) -> np.ndarray:
    n = x.shape[-1]
    ax = np.stack([x[slots == s, burn_in:].astype(np.float64).mean(0) for s in np.unique(slots)])
    ay = np.stack([y[slots == s, burn_in:].astype(np.float64).mean(0) for s in np.unique(slots)])
    return numpy_pearson(ax.reshape(-1, n), ay.reshape(-1, n))


def main(argv: list[str]) -> None:
    del argv
    args = FLAGS

    b, t, n, burn = args.trials, args.frames, args.neurons, args.burn_in
    bs = args.batch_size or b
    rng = np.random.default_rng(0)
    slots = np.arange(b) % max(b // args.repeats, 1)  # repeats interleaved
    signal = rng.normal(size=(slots.max() + 1, t, n)).astype(np.float32)
    x = (signal[slots] + rng.normal(size=(b, t, n)).astype(np.float32)).astype(np.float32)
    noise = rng.normal(size=(b, t, n)).astype(np.float32)
    y = (0.7 * signal[slots] + 0.5 * noise).astype(np.float32)
    n_bytes = x.nbytes + y.nbytes

    xd, yd = jax.device_put(x), jax.device_put(y)
    mask = M.frame_mask(np.full(b, t), t, burn)
    slots_d = jnp.asarray(slots, jnp.int32)
    n_stimuli = int(slots.max()) + 1
    chunks = [slice(i, min(i + bs, b)) for i in range(0, b, bs)]
    batches = [(xd[c], yd[c], mask[c], slots_d[c]) for c in chunks] if bs < b else [
        (xd, yd, mask, slots_d)
    ]  # sliced before timing: the kernels read device-resident batches

    def single_trial() -> jax.Array:
        stats = M.init_correlation_stats(n)
        for bx, by, bm, _ in batches:
            stats = M.update_correlation_stats(stats, bx, by, bm)
        return M.correlation_from_stats(stats).block_until_ready()

    def to_average() -> jax.Array:
        stats = M.init_repeat_stats(n_stimuli, t, n)
        for bx, by, bm, bslot in batches:
            stats = M.update_repeat_stats(stats, bx, by, bslot, bm)
        return M.correlation_to_average_from_stats(stats).block_until_ready()

    plain_sum = jax.jit(lambda a, c: jnp.sum(a) + jnp.sum(c))
    rows = best_ms(
        {
            "kernel single-trial": single_trial,
            "kernel to-average": to_average,
            "numpy f64 single-trial": lambda: numpy_single_trial(x, y, burn),
            "numpy f64 to-average": lambda: numpy_to_average(x, y, slots, burn),
            "plain read (jit sum)": lambda: plain_sum(xd, yd).block_until_ready(),
            "plain read (numpy copy)": lambda: (x.copy(), y.copy()),
        },
        args.rounds,
    )

    st_err = np.abs(np.asarray(single_trial()) - numpy_single_trial(x, y, burn)).max()
    ta_err = np.abs(np.asarray(to_average()) - numpy_to_average(x, y, slots, burn)).max()

    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {b} trials x {t} "
        f"frames x {n} neurons, {n_stimuli} stimuli, batch {bs}, {n_bytes / 1e6:.0f} MB read"
    )
    print(f"{'':26s} {'ms':>9s} {'GB/s':>8s}")
    for name, ms in rows.items():
        print(f"{name:26s} {ms:9.2f} {n_bytes / ms / 1e6:8.2f}")
    read = rows["plain read (jit sum)"]
    both = {k: rows[f"{k} single-trial"] + rows[f"{k} to-average"] for k in ("kernel", "numpy f64")}
    ratios = {
        "single-trial": (rows["numpy f64 single-trial"], rows["kernel single-trial"]),
        "to-average": (rows["numpy f64 to-average"], rows["kernel to-average"]),
        "both metrics": (both["numpy f64"], both["kernel"]),
    }
    for kind, (numpy_ms, kernel_ms) in ratios.items():
        print(
            f"{kind:13s}: {numpy_ms / kernel_ms:6.1f}x faster than numpy f64, "
            f"{kernel_ms / read:5.2f}x the plain-read time"
        )
    print(f"max |kernel - numpy f64|: single-trial {st_err:.1e}, to-average {ta_err:.1e}")


if __name__ == "__main__":
    app.run(main)
