"""Metrics against independent float64 NumPy implementations of the definitions."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from sensorium_jax import metrics as M

TOL = 1e-5
N = 6
BURN = 10
T_MAX = 70


# ---------------------------------------------------------------- float64 references


def ref_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column Pearson in float64; a constant column gives 0."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    out = np.zeros(x.shape[1])
    for n in range(x.shape[1]):
        if np.ptp(x[:, n]) == 0 or np.ptp(y[:, n]) == 0:
            continue
        dx, dy = x[:, n] - x[:, n].mean(), y[:, n] - y[:, n].mean()
        out[n] = (dx * dy).sum() / np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return out


def ref_single_trial(resp, pred, burn_in):
    xs, ys = [], []
    for r, p in zip(resp, pred):
        keep = ~np.isnan(r).all(axis=1)
        keep[:burn_in] = False
        xs.append(r[keep])
        ys.append(p[keep])
    return ref_pearson(np.concatenate(xs), np.concatenate(ys))


def ref_correlation_to_average(resp, pred, ids, burn_in):
    cells_x, cells_y = [], []
    for sid in dict.fromkeys(ids):
        trials = [i for i, s in enumerate(ids) if s == sid]
        for t in range(burn_in, max(len(resp[i]) for i in trials)):
            rows = [i for i in trials if t < len(resp[i]) and not np.isnan(resp[i][t]).all()]
            if rows:
                cells_x.append(np.mean([np.float64(resp[i][t]) for i in rows], axis=0))
                cells_y.append(np.mean([np.float64(pred[i][t]) for i in rows], axis=0))
    return ref_pearson(np.array(cells_x), np.array(cells_y))


def ref_feve(resp, pred, ids):
    """SENSORIUM 2022: images with >= 2 repeats; returns (feve, fev) per neuron."""
    resp, pred = np.float64(resp), np.float64(pred)
    groups = [np.flatnonzero(np.asarray(ids) == i) for i in dict.fromkeys(ids)]
    groups = [g for g in groups if len(g) >= 2]
    all_r = np.concatenate([resp[g] for g in groups])
    all_p = np.concatenate([pred[g] for g in groups])
    total_var = all_r.var(axis=0, ddof=1)
    noise_var = np.mean([resp[g].var(axis=0, ddof=1) for g in groups], axis=0)
    mse = ((all_r - all_p) ** 2).mean(axis=0)
    explainable = total_var - noise_var
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (mse - noise_var) / explainable, explainable / total_var


def naive_f32_single_trial(resp, pred, burn_in):
    """The textbook one-pass formula in float32: what the kernel must not be."""
    x = np.concatenate([r[burn_in:] for r in resp]).astype(np.float32)
    y = np.concatenate([p[burn_in:] for p in pred]).astype(np.float32)
    n = np.float32(len(x))
    sxy = (x * y).sum(0) - x.sum(0) * y.sum(0) / n
    sxx = (x * x).sum(0) - x.sum(0) ** 2 / n
    syy = (y * y).sum(0) - y.sum(0) ** 2 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return sxy / np.sqrt(sxx * syy)


# ---------------------------------------------------------------- random data


def make_trials(seed, offset=0.0, scale=1.0, n_stimuli=3, repeats=(2, 3, 1)):
    """Repeated stimuli with variable trial lengths, a constant neuron and a constant prediction."""
    rng = np.random.default_rng(seed)
    lengths = [T_MAX] + [int(rng.integers(40, T_MAX)) for _ in range(n_stimuli - 1)]
    signals = [rng.normal(size=(t, N)) for t in lengths]  # one T_max: kernels compile once
    resp, pred, ids = [], [], []
    for sid, (sig, reps) in enumerate(zip(signals, repeats)):
        for _ in range(reps):
            length = len(sig) - int(rng.integers(0, 8)) * (sid > 0)  # repeats of different lengths
            r = sig[:length] + 0.7 * rng.normal(size=(length, N))
            p = 0.8 * sig[:length] + 0.5 * rng.normal(size=(length, N))
            r[:, 0] = 2.5  # constant neuron
            p[:, 1] = -1.0  # constant prediction
            resp.append((offset + scale * r).astype(np.float32))
            pred.append((offset + scale * p).astype(np.float32))
            ids.append(f"video-{sid}")
    order = rng.permutation(len(resp))  # repeats are not adjacent
    return [resp[i] for i in order], [pred[i] for i in order], [ids[i] for i in order]


def stack_nan(trials):
    """Stacked [trials, T_max, N] with NaN padding."""
    out = np.full((len(trials), max(len(t) for t in trials), N), np.nan, np.float32)
    for i, t in enumerate(trials):
        out[i, : len(t)] = t
    return out


# ---------------------------------------------------------------- video metrics


@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (1e4, 0.05)])
def test_single_trial_matches_float64(offset, scale):
    resp, pred, _ = make_trials(0, offset, scale)
    ref = ref_single_trial(resp, pred, BURN)
    got = M.single_trial_correlation(resp, pred, burn_in=BURN, batch_size=3)
    assert got.dtype == np.float32 and got.shape == (N,)
    np.testing.assert_allclose(got, ref, atol=TOL)
    assert got[0] == 0 and got[1] == 0
    if offset:  # the naive float32 formula is far off on the same data
        naive = naive_f32_single_trial(resp, pred, BURN)[2:]
        assert not np.allclose(naive, ref[2:], atol=1e-2)


@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (1e4, 0.05)])
def test_correlation_to_average_matches_float64(offset, scale):
    resp, pred, ids = make_trials(1, offset, scale)
    ref = ref_correlation_to_average(resp, pred, ids, BURN)
    got = M.correlation_to_average(resp, pred, ids, burn_in=BURN, batch_size=3)
    np.testing.assert_allclose(got, ref, atol=TOL)
    assert got[0] == 0 and got[1] == 0


def test_stacked_nan_padding_equals_list():
    resp, pred, ids = make_trials(2)
    xs, ys = stack_nan(resp), stack_nan(pred)
    np.testing.assert_allclose(
        M.single_trial_correlation(xs, ys, burn_in=BURN),
        ref_single_trial(resp, pred, BURN),
        atol=TOL,
    )
    np.testing.assert_allclose(
        M.correlation_to_average(xs, ys, ids, burn_in=BURN),
        ref_correlation_to_average(resp, pred, ids, BURN),
        atol=TOL,
    )


def test_batch_size_independence():
    resp, pred, ids = make_trials(3, 1e4, 0.1)
    st = [M.single_trial_correlation(resp, pred, BURN, batch_size=b) for b in (3, 8)]
    ta = [M.correlation_to_average(resp, pred, ids, BURN, batch_size=b) for b in (3, 8)]
    for a in st[1:]:
        np.testing.assert_allclose(a, st[0], atol=1e-6)
    for a in ta[1:]:
        np.testing.assert_allclose(a, ta[0], atol=1e-6)


def test_default_burn_in_and_short_trials():
    rng = np.random.default_rng(4)
    lengths = (40, 60, T_MAX, 65)  # the first trial is all burn-in
    resp = [rng.normal(size=(t, N)).astype(np.float32) for t in lengths]
    pred = [(r + rng.normal(size=r.shape)).astype(np.float32) for r in resp]
    np.testing.assert_allclose(
        M.single_trial_correlation(resp, pred), ref_single_trial(resp, pred, 50), atol=TOL
    )
    ids = ["a", "b", "a", "c"]
    np.testing.assert_allclose(
        M.correlation_to_average(resp, pred, ids),
        ref_correlation_to_average(resp, pred, ids, 50),
        atol=TOL,
    )


def test_kernel_entry_mask_and_empty_neurons():
    """Direct kernel use: a [B, T, N] mask, NaN under the mask, a neuron never counted."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 20, N)).astype(np.float32) + 300.0
    y = (x + rng.normal(size=x.shape)).astype(np.float32)
    mask = rng.random(x.shape) > 0.3
    mask[:, :, 3] = False
    x[0, np.argmax(mask[0, :, 4]), 4] += 40.0  # an outlying first value must cost no precision
    x[~mask] = np.nan
    stats = M.init_correlation_stats(N)
    for b in range(0, 4, 2):
        stats = M.update_correlation_stats(stats, x[b : b + 2], y[b : b + 2], mask[b : b + 2])
    got = np.asarray(M.correlation_from_stats(stats))
    ref = np.zeros(N)
    for n in range(N):
        keep = mask[..., n]
        if keep.any():
            ref[n] = ref_pearson(x[..., n][keep][:, None], y[..., n][keep][:, None])[0]
    np.testing.assert_allclose(got, ref, atol=TOL)
    assert got[3] == 0 and np.isfinite(got).all()
    np.testing.assert_array_equal(stats.count, mask.sum(axis=(0, 1)))


def test_frame_mask_and_errors():
    np.testing.assert_array_equal(
        M.frame_mask(np.array([3, 5]), 5, burn_in=1),
        [[False, True, True, False, False], [False, True, True, True, True]],
    )
    x = np.zeros((2, 60, N), np.float32)
    x[0, 55, 2] = np.nan
    with pytest.raises(ValueError, match="NaN inside a frame"):
        M.single_trial_correlation(x, x)
    with pytest.raises(ValueError, match="stimulus ids"):
        M.correlation_to_average(x, x, [0])


# ---------------------------------------------------------------- static metrics


def make_static(seed, offset=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(12), rng.integers(1, 5, size=12))  # some shown once
    rng.shuffle(ids)
    signal = rng.normal(size=(12, N)) * np.linspace(0.1, 2.0, N)  # FEV spread over neurons
    resp = signal[ids] + rng.normal(size=(len(ids), N))
    pred = signal[ids] * 0.9 + 0.3 * rng.normal(size=(len(ids), N))
    resp[:, 0] = 1.0
    to_f32 = lambda v: (offset + scale * v).astype(np.float32)  # noqa: E731
    return to_f32(resp), to_f32(pred), ids


@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (1e4, 0.05)])
def test_static_metrics_match_float64(offset, scale):
    resp, pred, ids = make_static(6, offset, scale)
    got = M.static_single_trial_correlation(resp, pred, batch_size=7)
    np.testing.assert_allclose(got, ref_pearson(resp, pred), atol=TOL)
    ref_ta = ref_correlation_to_average(list(resp[:, None]), list(pred[:, None]), list(ids), 0)
    np.testing.assert_allclose(
        M.static_correlation_to_average(resp, pred, ids, batch_size=7), ref_ta, atol=TOL
    )
    want_feve, ref_fev = ref_feve(resp, pred, ids)
    got_feve, got_fev = M.feve_and_fev(resp, pred, ids, batch_size=7)
    live = np.isfinite(ref_fev)  # neuron 0 is constant: no explainable variance
    np.testing.assert_allclose(got_fev[live], ref_fev[live], atol=TOL)
    np.testing.assert_allclose(got_feve[live], want_feve[live], atol=TOL)
    assert got_fev[0] == 0 and got_feve[0] == 0
    values, kept = M.feve(resp, pred, ids, threshold=0.15, batch_size=7, return_kept=True)
    np.testing.assert_array_equal(kept, live & (ref_fev >= 0.15))
    np.testing.assert_allclose(values, want_feve[kept], atol=TOL)
    assert 0 < kept.sum() < N  # the threshold does drop some neurons here


def test_pooled_mean_pools_neurons_not_mice():
    assert M.pooled_mean([np.array([1.0]), np.array([0.0, 0.0, 0.0])]) == pytest.approx(0.25)


@pytest.mark.parametrize("rows", [3, 133])  # fewer rows than a slab; full blocks and a tail
def test_cpu_and_accelerator_passes_agree(rows):
    """The row-loop passes used on CPU and the fused ones used on GPU/TPU give the same sums."""
    from sensorium_jax.metrics import passes

    assert 133 > 2 * passes.BLOCK_ROWS
    rng = np.random.default_rng(7)
    x = (1e3 + rng.normal(size=(rows, N))).astype(np.float32)
    y = (x + rng.normal(size=x.shape)).astype(np.float32)
    k = np.full(N, 1e3, np.float32)
    scale = rng.uniform(0.5, 2, size=(rows, 1)).astype(np.float32)
    mask = rng.random((rows, 1)) > 0.2
    x_nan = np.where(mask, x, np.nan)
    rows_sums = jax.jit(passes._sums_rows)(x_nan, y, mask, k, k, scale)
    direct = jax.jit(passes._sums_direct)(x_nan, y, mask, k, k, scale)
    np.testing.assert_allclose(rows_sums, direct, rtol=1e-5, atol=1e-3)
    assert np.isfinite(np.asarray(rows_sums)).all()

    b, t, n_stim = 3, 2 * passes.FRAME_BLOCK + 5, 2  # full frame blocks and a clamped tail
    xs = rng.normal(size=(b, t, N)).astype(np.float32)
    ys = rng.normal(size=(b, t, N)).astype(np.float32)
    slot = np.array([1, 0, 1], np.int32)
    mask = rng.random((b, t)) > 0.3
    xs[~mask] = np.nan
    start = np.zeros((n_stim, t + 2, N), np.float32)  # stats may hold more frames
    got = jax.jit(passes._scatter_blocks)(start, start, xs, ys, slot, mask, k, k)
    want = jax.jit(passes._scatter_direct)(start, start, xs, ys, slot, mask, k, k)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-6)
