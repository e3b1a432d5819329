"""The data passes of the metric kernels, shaped for each backend's compiler.

On GPU/TPU, XLA fuses the mask, the shift and all five reductions (or the scatter) into one
pass over memory, so the plain expression is best. XLA:CPU instead gives each reduction its
own pass and materializes the shared masked deviations (a fresh [B, T, N] temporary, page
faults included), which costs several times a plain read. There we walk the data a slab of a
few rows [8, N] at a time inside one loop with [N] accumulators: each element is read once and
every temporary stays in cache. Both paths compute the same sums (up to float32 summation order).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SLAB_ROWS = 8  # rows per loop step on CPU (one fused reduce per slab, in cache)
BLOCK_ROWS = 64  # rows per partial sum on CPU (bounds float32 accumulation error)
FRAME_BLOCK = 16  # frames per step of the CPU scatter (16 x 8,000 neurons: 512 KB)
SMALL_ELEMENTS = 1 << 20  # below this (4 MiB per input), CPU uses the fused expression too


def _deviation(v, scale, k, mask):
    """where(mask, v * scale - k, 0): masked entries may hold NaN."""
    return jnp.where(mask, (v if scale is None else v * scale) - k, 0.0)


def _sums_direct(x, y, mask, kx, ky, scale=None) -> jax.Array:
    """[5, N]: sums over rows of dx, dy, dx^2, dy^2, dx*dy."""
    dx = _deviation(x, scale, kx, mask)
    dy = _deviation(y, scale, ky, mask)
    return jnp.stack([dx.sum(0), dy.sum(0), (dx * dx).sum(0), (dy * dy).sum(0), (dx * dy).sum(0)])


def _add(a: tuple, b: tuple) -> tuple:
    return tuple(u + v for u, v in zip(a, b))


def _sums_rows(x, y, mask, kx, ky, scale=None) -> jax.Array:
    """Same sums, one slab of SLAB_ROWS rows per step with [N] accumulators (single read on
    XLA:CPU).

    Each slab's five sums come from one variadic reduce (one fused kernel over the slab, which
    stays in cache). Slabs are summed in blocks of BLOCK_ROWS rows whose partial sums are then
    added, so no float32 accumulator runs through more than ~BLOCK_ROWS + rows / BLOCK_ROWS
    additions. The last slab is clamped to end at the last row, its already-added rows masked.
    """
    n_rows, n = x.shape
    slab = min(SLAB_ROWS, n_rows)
    zeros = tuple(jnp.zeros((n,), jnp.float32) for _ in range(5))
    slabs_per_block = BLOCK_ROWS // SLAB_ROWS

    def add_slab(j, acc):
        nominal = j * slab
        start = jnp.clip(nominal, 0, n_rows - slab)
        take = lambda v: jax.lax.dynamic_slice_in_dim(v, start, slab, 0)  # noqa: E731
        fresh = (start + jnp.arange(slab) >= nominal) & (nominal < n_rows)
        keep = take(mask) & fresh[:, None]
        s = None if scale is None else take(scale)
        dx = _deviation(take(x), s, kx, keep)
        dy = _deviation(take(y), s, ky, keep)
        terms = (dx, dy, dx * dx, dy * dy, dx * dy)
        return _add(acc, jax.lax.reduce(terms, tuple(jnp.float32(0) for _ in terms), _add, (0,)))

    def add_block(b, acc):
        step = lambda i, part: add_slab(b * slabs_per_block + i, part)  # noqa: E731
        return _add(acc, jax.lax.fori_loop(0, slabs_per_block, step, zeros))

    blocks = -(-n_rows // (slabs_per_block * slab))
    return jnp.stack(jax.lax.fori_loop(0, blocks, add_block, zeros))


def _sums_cpu(x, y, mask, kx, ky, scale=None) -> jax.Array:
    """Row loop for large inputs; small ones compile faster and run fast enough fused."""
    small = x.size <= SMALL_ELEMENTS
    return (_sums_direct if small else _sums_rows)(x, y, mask, kx, ky, scale)


def masked_moment_sums(
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array,
    kx: jax.Array,
    ky: jax.Array,
    scale: jax.Array | None = None,
) -> jax.Array:
    """[5, N] sums of dv = v * scale - k over the counted rows of x, y [rows, N].

    mask: [rows, 1] or [rows, N] bool; scale: optional [rows, 1] per-row factor.
    Order: sum dx, sum dy, sum dx^2, sum dy^2, sum dx*dy.
    """
    args = (x, y, mask, kx, ky) + (() if scale is None else (scale,))
    return jax.lax.platform_dependent(*args, cpu=_sums_cpu, default=_sums_direct)


def _scatter_direct(sum_x, sum_y, x, y, slot, mask, kx, ky):
    """Adds where(mask, v - k, 0) of trial b into cell row slot[b] (frames aligned from 0)."""
    t = x.shape[1]
    m = mask[..., None]
    dx = jnp.where(m, x - kx, 0.0)
    dy = jnp.where(m, y - ky, 0.0)
    return sum_x.at[slot, :t].add(dx), sum_y.at[slot, :t].add(dy)


def _scatter_blocks(sum_x, sum_y, x, y, slot, mask, kx, ky):
    """Same update, one (frame block, trial) slab [F, N] per step, in place in the carried sums.

    Frame-block-major order: the S cell slabs of a block stay in cache while its trials are
    added, and each step moves F rows, so the loop's fixed cost is paid T / F times per trial
    instead of T. The last block is clamped to end at T, its already-added frames masked.
    """
    b, t, n = x.shape
    f = min(FRAME_BLOCK, t)
    blocks = -(-t // f)
    slot = jnp.asarray(slot)

    def body(i, sums):
        block, trial = i // b, i % b
        nominal = block * f
        start = jnp.minimum(nominal, t - f)
        fresh = (start + jnp.arange(f)) >= nominal  # frames of a clamped block added already
        keep = (jax.lax.dynamic_slice(mask, (trial, start), (1, f)) & fresh)[..., None]
        cell = (slot[trial], start, 0)

        def add(total, v, k):
            slab = jax.lax.dynamic_slice(v, (trial, start, 0), (1, f, n))
            old = jax.lax.dynamic_slice(total, cell, (1, f, n))
            return jax.lax.dynamic_update_slice(total, old + jnp.where(keep, slab - k, 0.0), cell)

        return add(sums[0], x, kx), add(sums[1], y, ky)

    return jax.lax.fori_loop(0, blocks * b, body, (sum_x, sum_y))


def _scatter_cpu(sum_x, sum_y, x, y, slot, mask, kx, ky):
    small = x.size <= SMALL_ELEMENTS
    return (_scatter_direct if small else _scatter_blocks)(sum_x, sum_y, x, y, slot, mask, kx, ky)


def scatter_shifted(
    sum_x: jax.Array,
    sum_y: jax.Array,
    x: jax.Array,
    y: jax.Array,
    slot: jax.Array,
    mask: jax.Array,
    kx: jax.Array,
    ky: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Per-cell sums [S, T_s, N] plus the batch [B, T, N] (T <= T_s), shifted and masked."""
    return jax.lax.platform_dependent(
        sum_x, sum_y, x, y, slot, mask, kx, ky, cpu=_scatter_cpu, default=_scatter_direct
    )
