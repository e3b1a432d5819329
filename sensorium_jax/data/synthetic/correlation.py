"""A float64 NumPy Pearson accumulator: the reference the synthetic ground truth is scored with.

Why NumPy and not the JAX kernels of `sensorium_jax.metrics`: the generator must stay
byte-deterministic across processes and machines and cheap to start (no JAX import, no
compile per trial shape); float64 sums of shifted values need none of the kernels' care.
"""

from __future__ import annotations

import numpy as np


class PearsonAccumulator:
    """Per-row Pearson correlation of x and y accumulated over columns (frames) in float64.

    Sums are taken of values minus a per-row shift (the first batch's means), so a large
    offset costs no precision. A row with zero variance (or fewer than 2 columns) gets 0.
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift: tuple[np.ndarray, np.ndarray] | None = None
        self.sums: list[np.ndarray] | None = None

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """x, y: [rows, columns]."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape[1] == 0:
            return
        if self.shift is None:
            self.shift = (x.mean(1, keepdims=True), y.mean(1, keepdims=True))
            self.sums = [np.zeros(x.shape[0]) for _ in range(5)]
        x = x - self.shift[0]
        y = y - self.shift[1]
        for total, value in zip(self.sums, (x, y, x * x, y * y, x * y)):
            total += value.sum(1)
        self.n += x.shape[1]

    def correlation(self) -> np.ndarray:
        """[rows] float64."""
        if self.sums is None or self.n < 2:
            return np.zeros(0)
        sx, sy, sxx, syy, sxy = self.sums
        n = self.n
        cov = sxy - sx * sy / n
        vx = sxx - sx**2 / n
        vy = syy - sy**2 / n
        denominator = np.sqrt(np.maximum(vx, 0) * np.maximum(vy, 0))
        return np.where(denominator > 0, cov / np.where(denominator > 0, denominator, 1), 0.0)
