"""Host-side learning-rate control driven by the validation score.

Reduce-on-plateau and early stopping act on a metric seen once per evaluation, so they
live outside the compiled step; the step only reads a scalar learning-rate scale. Two plateau
rules: "simple" (one patience counter lowers the rate and, past `max_reductions`, stops) and
"reference" (the SENSORIUM 2023 baselines' trainer: an early stopper whose patience restores
the best parameters and stops at its `max_reductions`-th plateau, beside a rate scheduler that
counts on its own). Both are pure functions of (state, score), checked on scripted sequences.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import optax


PLATEAU_RULES = ("simple", "reference")
# torch's ReduceLROnPlateau ignores a reduction smaller than this (in learning-rate units).
RATE_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class PlateauState:
    """The host-side schedule state; saved in every checkpoint's meta so a resume continues it.

    `best`/`best_step`/`bad_evaluations` are the early stopper's; `plateaus` counts the times its
    patience ran out (each one restores the best parameters with `schedule.restore_best`).
    `rate_best`/`rate_bad_evaluations` are the rate scheduler's own, used by the "reference"
    rule, whose scheduler counts separately from the stopper (as torch's ReduceLROnPlateau
    next to neuralpredictors' early_stopping does).
    """

    best: float = -math.inf
    best_step: int = -1
    bad_evaluations: int = 0
    scale: float = 1.0
    reductions: int = 0
    plateaus: int = 0
    rate_best: float = -math.inf
    rate_bad_evaluations: int = 0


def track_best(state: PlateauState, score: float, step: int, threshold: float = 1e-6) -> PlateauState:
    """The best score only (schedules without a plateau rule still report their best step)."""
    if score > state.best + threshold:
        return dataclasses.replace(state, best=score, best_step=step, bad_evaluations=0)
    return dataclasses.replace(state, bad_evaluations=state.bad_evaluations + 1)


def plateau_update(
    state: PlateauState,
    score: float,
    step: int,
    *,
    factor: float,
    patience: int,
    max_reductions: int,
    threshold: float = 1e-6,
    min_scale: float = 0.0,
) -> tuple[PlateauState, bool]:
    """The "simple" rule: one counter. After `patience` bad evaluations the next one lowers the
    scale by `factor` (not below `min_scale`) and counts a plateau; the first one past patience
    after `max_reductions` reductions stops. Returns (new state, stop?)."""
    if score > state.best + threshold:
        return dataclasses.replace(state, best=score, best_step=step, bad_evaluations=0), False
    bad = state.bad_evaluations + 1
    if bad <= patience:
        return dataclasses.replace(state, bad_evaluations=bad), False
    if state.reductions >= max_reductions:
        return dataclasses.replace(state, bad_evaluations=bad), True
    reduced = dataclasses.replace(
        state, scale=max(state.scale * factor, min_scale), reductions=state.reductions + 1,
        plateaus=state.plateaus + 1, bad_evaluations=0,
    )
    return reduced, False


def reference_start(state: PlateauState, untrained_score: float) -> PlateauState:
    """The early stopper's first best is the untrained model's score (step 0), as in the reference;
    the rate scheduler's starts at -inf."""
    return dataclasses.replace(state, best=untrained_score, best_step=0)


def reference_plateau_update(
    state: PlateauState,
    score: float,
    step: int,
    *,
    factor: float,
    patience: int,
    max_plateaus: int,
    threshold: float = 1e-6,
    min_scale: float = 0.0,
    eps: float = 0.0,
) -> tuple[PlateauState, bool]:
    """The "reference" rule: neuralpredictors' `early_stopping(interval=1, lr_decay_steps=
    max_plateaus)` around torch's `ReduceLROnPlateau(mode="max", threshold_mode="abs")`.

    The scheduler steps first: a score above its best by more than `threshold` resets its count,
    otherwise the count grows and past `patience` the scale drops by `factor` (not below
    `min_scale`; a drop of `eps` or less is skipped) and the count resets. Then the stopper: after
    `patience` bad evaluations in a row it counts a plateau (the best parameters come back) and
    its count resets, the scheduler's does not; the `max_plateaus`-th plateau stops.
    Returns (new state, stop?).
    """
    rate_bad = 0 if score > state.rate_best + threshold else state.rate_bad_evaluations + 1
    rate_best = score if rate_bad == 0 else state.rate_best
    scale, reductions = state.scale, state.reductions
    if rate_bad > patience:
        lowered = max(scale * factor, min_scale)
        if scale - lowered > eps:
            scale, reductions = lowered, reductions + 1
        rate_bad = 0
    state = dataclasses.replace(state, scale=scale, reductions=reductions, rate_best=rate_best,
                                rate_bad_evaluations=rate_bad)
    state = track_best(state, score, step, threshold)
    if state.bad_evaluations < patience:
        return state, False
    plateaus = state.plateaus + 1
    return dataclasses.replace(state, plateaus=plateaus, bad_evaluations=0), plateaus >= max_plateaus


def uses_reference_rule(schedule_config) -> bool:
    return schedule_config.name == "plateau" and schedule_config.get("plateau_rule", "simple") == "reference"


def schedule_update(schedule_config, state: PlateauState, score: float, step: int) -> tuple[PlateauState, bool]:
    """One validation score through the rule `schedule_config` names; returns (new state, stop?).

    Configs written before a field existed read its old behaviour (no floor, threshold 1e-6).
    """
    threshold = float(schedule_config.get("plateau_threshold", 1e-6))
    if schedule_config.name != "plateau":
        return track_best(state, score, step, threshold), False
    rate = float(schedule_config.learning_rate)
    options = dict(factor=float(schedule_config.plateau_factor), patience=int(schedule_config.plateau_patience),
                   threshold=threshold, min_scale=float(schedule_config.get("min_learning_rate", 0.0)) / rate)
    if uses_reference_rule(schedule_config):
        return reference_plateau_update(state, score, step, max_plateaus=int(schedule_config.max_reductions),
                                        eps=RATE_EPS / rate, **options)
    return plateau_update(state, score, step, max_reductions=int(schedule_config.max_reductions), **options)


def restores_best(schedule_config, before: PlateauState, after: PlateauState) -> bool:
    """Whether this evaluation ended a plateau and the best parameters are to be restored."""
    return bool(schedule_config.get("restore_best", False)) and after.plateaus > before.plateaus


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
    if name == "warmup_flat_cosine":
        return warmup_flat_cosine(config, total_steps)
    raise ValueError(f"unknown schedule name {name!r}: expected constant, plateau, warmup_cosine or "
                     "warmup_flat_cosine")


def warmup_flat_cosine(config, total_steps: int) -> optax.Schedule:
    """Linear warm-up from `warmup_start_factor` x the rate over `warmup_steps`, the rate held
    until `flat_fraction` of the training steps, then a cosine to `end_learning_rate` at the end
    (mmcv's linear warm-up with CosineRestart periods [flat, decay], as Dynamic-V1FM trains).

    The fraction keeps the phases' proportions when the steps come from `train.max_epochs`. The
    two fields are read with defaults (no flat phase, warm-up from 0) because the config check
    probes schedule names with the common fields only.
    """
    rate, end = float(config.learning_rate), float(config.end_learning_rate)
    warmup = int(config.warmup_steps)
    start = float(config.get("warmup_start_factor", 0.0)) * rate
    decay_start = max(int(round(float(config.get("flat_fraction", 0.0)) * total_steps)), warmup)
    decay = optax.cosine_decay_schedule(rate, max(total_steps - decay_start, 1), alpha=end / rate if rate else 0.0)
    return optax.join_schedules(
        [optax.linear_schedule(start, rate, warmup), optax.constant_schedule(rate), decay],
        boundaries=[warmup, decay_start],
    )


def _base_optimizer(name: str, schedule: optax.Schedule, weight_decay: float) -> optax.GradientTransformation:
    if name == "adamw":
        return optax.adamw(schedule, weight_decay=weight_decay)
    if name == "adam":
        return optax.adam(schedule)
    raise ValueError(f"unknown optimizer {name!r}: expected adamw or adam")


DEFAULT_GROUP = "default"


def _path_names(path: tuple) -> set[str]:
    """The attribute and dict names along a parameter's pytree path."""
    names = set()
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            names.add(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            names.add(key.name)
    return names


def parameter_groups(groups) -> Callable:
    """`params -> labels`: each parameter's group, the first of `groups` (in order) that lists a
    module name found along its path, else `DEFAULT_GROUP`."""
    members = [(str(group), set(options.modules)) for group, options in groups.items()]

    def label(path: tuple, _) -> str:
        names = _path_names(path)
        return next((group for group, modules in members if modules & names), DEFAULT_GROUP)

    return lambda params: jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(optimizer_config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer of one model. An ensemble applies it to each member on its own (its state
    is initialised per member and the update mapped over them), so Adam's moments and counts and
    the global norm of `grad_clip_norm` are each member's own, as in its separate run.

    `optimizer.groups` (optional, empty by default) gives parts of the model rates and weight
    decays of their own, as torch's parameter groups: `{group: {"modules": (names,),
    "learning_rate_scale": s, "weight_decay": w}}`; a parameter whose path goes through one of
    the named modules follows the schedule times s with decay w, the others the schedule with
    `optimizer.weight_decay`. The plateau scale and gradient clipping act on all of them.
    """
    name = optimizer_config.name
    tx = _base_optimizer(name, schedule, optimizer_config.weight_decay)
    groups = optimizer_config.get("groups", None) or {}
    if groups:
        if DEFAULT_GROUP in groups:
            raise ValueError(f"optimizer.groups cannot be called {DEFAULT_GROUP!r}")
        transforms = {DEFAULT_GROUP: tx}
        for group, options in groups.items():
            scale = float(options.learning_rate_scale)
            scaled = lambda step, scale=scale: schedule(step) * scale  # noqa: E731
            transforms[str(group)] = _base_optimizer(name, scaled, float(options.weight_decay))
        tx = optax.multi_transform(transforms, parameter_groups(groups))
    if optimizer_config.get("grad_clip_norm", 0.0):
        tx = optax.chain(optax.clip_by_global_norm(optimizer_config.grad_clip_norm), tx)
    return tx
