"""Host-side learning-rate control driven by the validation score.

Reduce-on-plateau and early stopping act on a metric seen once per evaluation, so they
live outside the compiled step; the step only reads a scalar learning-rate scale.
"""

from __future__ import annotations

import dataclasses
import math

import optax


@dataclasses.dataclass(frozen=True)
class PlateauState:
    best: float = -math.inf
    best_step: int = -1
    bad_evaluations: int = 0
    scale: float = 1.0
    reductions: int = 0


def plateau_update(
    state: PlateauState,
    score: float,
    step: int,
    *,
    factor: float,
    patience: int,
    max_reductions: int,
    threshold: float = 1e-6,
) -> tuple[PlateauState, bool]:
    """Records one validation score (higher is better); returns (new state, stop?)."""
    if score > state.best + threshold:
        return dataclasses.replace(state, best=score, best_step=step, bad_evaluations=0), False
    bad = state.bad_evaluations + 1
    if bad <= patience:
        return dataclasses.replace(state, bad_evaluations=bad), False
    if state.reductions >= max_reductions:
        return dataclasses.replace(state, bad_evaluations=bad), True
    reduced = dataclasses.replace(
        state, scale=state.scale * factor, reductions=state.reductions + 1, bad_evaluations=0
    )
    return reduced, False


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
    """The step-driven part of the learning rate (the plateau scale multiplies it)."""
    name = config.name
    if name in ("constant", "plateau"):
        return optax.constant_schedule(config.learning_rate)
    if name == "warmup_cosine":
        warmup = int(config.warmup_steps)
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=config.learning_rate,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=config.end_learning_rate,
        )
    raise ValueError(f"unknown schedule name {name!r}: expected constant, plateau or warmup_cosine")


def make_optimizer(optimizer_config, schedule: optax.Schedule) -> optax.GradientTransformation:
    name = optimizer_config.name
    if name == "adamw":
        tx = optax.adamw(schedule, weight_decay=optimizer_config.weight_decay)
    elif name == "adam":
        tx = optax.adam(schedule)
    else:
        raise ValueError(f"unknown optimizer {name!r}: expected adamw or adam")
    if optimizer_config.get("grad_clip_norm", 0.0):
        tx = optax.chain(optax.clip_by_global_norm(optimizer_config.grad_clip_norm), tx)
    return tx
