"""Evaluation metrics: streaming on-device kernels and per-neuron convenience functions.

Kernels (jitted, float32-sound, used by the trainer and evaluate.py):
  init/update_correlation_stats, correlation_from_stats      -> single-trial correlation
  init/update_repeat_stats, correlation_to_average_from_stats -> correlation to average
  init/update_feve_stats, feve_from_stats                     -> static FEVE
Convenience functions return float32 [N] NumPy arrays (see `functions`).
"""

from sensorium_jax.metrics.feve import (
    FeveResult,
    FeveStats,
    feve_from_stats,
    init_feve_stats,
    update_feve_stats,
)
from sensorium_jax.metrics.functions import (
    correlation_to_average,
    feve,
    feve_and_fev,
    pooled_mean,
    single_trial_correlation,
    static_correlation_to_average,
    static_single_trial_correlation,
)
from sensorium_jax.metrics.repeats import (
    RepeatStats,
    correlation_to_average_from_stats,
    init_repeat_stats,
    update_repeat_stats,
)
from sensorium_jax.metrics.stats import (
    CorrelationStats,
    correlation_from_stats,
    frame_mask,
    init_correlation_stats,
    merge_correlation_stats,
    update_correlation_stats,
)

__all__ = [
    "CorrelationStats",
    "FeveResult",
    "FeveStats",
    "RepeatStats",
    "correlation_from_stats",
    "correlation_to_average",
    "correlation_to_average_from_stats",
    "feve",
    "feve_and_fev",
    "feve_from_stats",
    "frame_mask",
    "init_correlation_stats",
    "init_feve_stats",
    "init_repeat_stats",
    "merge_correlation_stats",
    "pooled_mean",
    "single_trial_correlation",
    "static_correlation_to_average",
    "static_single_trial_correlation",
    "update_correlation_stats",
    "update_feve_stats",
    "update_repeat_stats",
]
