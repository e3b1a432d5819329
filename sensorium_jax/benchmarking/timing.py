"""Pure summaries of timings and XLA cost analyses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p10, p90, min and max of per-step times, in seconds.

    The median is the steady-state figure: robust to the occasional slow step of a shared
    machine that a mean would smear into every step.
    """
    if len(seconds) == 0:
        raise ValueError("no timings to summarize")
    values = np.asarray(seconds, np.float64)
    return {
        "median": float(np.median(values)),
        "p10": float(np.percentile(values, 10)),
        "p90": float(np.percentile(values, 90)),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


def flops_from_cost_analysis(analysis: Any) -> float | None:
    """The 'flops' entry of `Compiled.cost_analysis()`: a dict in current JAX, a list of one
    dict per executable in older versions; None when the backend gives no estimate."""
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not isinstance(analysis, dict) or "flops" not in analysis:
        return None
    flops = float(analysis["flops"])
    return flops if flops > 0 else None
