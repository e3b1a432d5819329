"""Distillation: a trained teacher fills in the responses no mouse recorded.

A clip was shown to one mouse, so only that mouse's readout learns from it. DwiseNeuro's second
training stage lets every readout learn from every clip: a first-stage model (the teacher) predicts
the other mice's responses to the clip, and the student is trained on its own mouse's recorded
responses plus those predictions, the predicted entries weighted so that they make `ratio` of
the loss's weight (0.36 in the first-place recipe): each clip's real summed loss counts with its
clip weight, each (clip, other mouse) pair with `ratio / (1 - ratio)` x (the clips' total weight)
/ (the number of such pairs).

    python train.py --config configs/dwiseneuro.py:distill --workdir runs/dwiseneuro_distilled \
        --config.train.distill.teacher=runs/dwiseneuro

The teacher predicts in evaluation mode from its inference parameters (its EMA when it kept
one) on the very inputs the student sees (after augmentation), inside the compiled step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.errors import InputDataError
from sensorium_jax.models import Model, align_targets
from sensorium_jax.models.losses import LossScale, scaled_loss, valid_mask

LossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]

# The batch entry the step adds before the loss: the teacher's rates [B, mice, T_out, Nmax].
TEACHER_RATES = "teacher_rates"


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A frozen model whose predictions become targets: its graph and inference variables."""

    graphdef: nnx.GraphDef
    variables: dict[str, nnx.State]  # {"params", "rest"}
    ratio: float  # the predicted entries' share of the loss's weight
    neuron_counts: tuple[int, ...]  # every mouse's neuron count, in the card's order


def load_teacher(path: str | Path, card: DatasetCard, normalization: str, ratio: float) -> Teacher:
    """The teacher trained in `path` (a workdir or checkpoint), refused in one line unless it
    reads the student's mice (names and neuron counts, in order) in the same units."""
    from sensorium_jax.inference.checkpoint import restore_for_inference

    restored = restore_for_inference(path)
    theirs = [(m.name, m.n_neurons) for m in restored.card.mice]
    ours = [(m.name, m.n_neurons) for m in card.mice]
    if theirs != ours:
        raise InputDataError(path, "dataset_card.mice", f"the student's mice {ours}", f"{theirs}")
    if restored.card.normalization != normalization:
        raise InputDataError(path, "dataset_card.normalization", f"the student's {normalization!r}",
                             repr(restored.card.normalization))
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"train.distill.ratio must be in (0, 1), got {ratio}")
    return Teacher(restored.graphdef, restored.variables, float(ratio), tuple(int(n) for _, n in ours))


def teacher_rates(graphdef: nnx.GraphDef, variables: dict[str, nnx.State], batch: dict, mice: int) -> jax.Array:
    """[B, mice, T_out, Nmax]: the teacher's evaluation-mode rates of every mouse, not differentiated."""
    teacher = nnx.merge(graphdef, variables["params"], variables["rest"], copy=True)
    rates = teacher.every_mouse_predictions(batch, mice, train=False).astype(jnp.float32)
    return jax.lax.stop_gradient(jnp.swapaxes(rates, 0, 1))


def summed_losses(loss_fn: LossFn, predictions: jax.Array, targets: jax.Array, neuron_mask: jax.Array,
                  frame_mask: jax.Array) -> jax.Array:
    """[rows]: each row's loss summed over its valid entries (`loss_fn`'s mean x their count)."""
    entries = jnp.sum(valid_mask(neuron_mask, frame_mask), axis=(1, 2)).astype(jnp.float32)
    means = jax.vmap(lambda p, r, n, f: loss_fn(p[None], r[None], n[None], f[None]))(
        predictions, targets, neuron_mask, frame_mask)
    return means * entries


def distillation_loss(
    model: Model, batch: dict, loss_fn: LossFn, scale: LossScale, ratio: float, neuron_counts: tuple[int, ...]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss to differentiate, metrics) of a student on its clips' recorded responses and the
    teacher's rates (`batch[TEACHER_RATES]`) for every other mouse.

    The recorded part is exactly `steps.model_loss`'s data loss; the predicted part is added in
    the same units (divided by the same normaliser). Reported: "loss" (the recorded part, so it
    compares with a run without distillation), "distillation" (the predicted part) and
    "regularizer"."""
    mice = len(neuron_counts)
    every = model.every_mouse_predictions(batch, mice, train=True)  # [M, B, T, N]
    mouse = jnp.asarray(batch["mouse"], jnp.int32)
    own = jnp.take_along_axis(every, mouse[None, :, None, None], axis=0)[0]
    targets, neuron_mask, frame_mask = align_targets(batch, every.shape[2])
    recorded, normaliser = scaled_loss(loss_fn, own, targets, neuron_mask, frame_mask, mouse, scale)

    teacher = batch[TEACHER_RATES]  # [B, M, T, N]
    if teacher.shape[2] != every.shape[2]:
        raise ValueError(f"the teacher predicts {teacher.shape[2]} frames of a clip, the student {every.shape[2]}")
    b, m, t, n = teacher.shape
    student = jnp.swapaxes(every, 0, 1).reshape(b * m, t, n)
    counts = jnp.asarray(neuron_counts, jnp.int32)
    neurons = jnp.broadcast_to(jnp.arange(n)[None, None, :] < counts[None, :, None], (b, m, n)).reshape(b * m, n)
    frames = jnp.broadcast_to(frame_mask[:, None], (b, m, t)).reshape(b * m, t)
    per_pair = summed_losses(loss_fn, student, teacher.reshape(b * m, t, n), neurons, frames).reshape(b, m)
    others = jnp.arange(m)[None, :] != mouse[:, None]  # [B, M]: the pairs no mouse recorded

    own_entries = jnp.sum(valid_mask(neuron_mask, frame_mask), axis=(1, 2))
    clip_weight = jnp.sum(scale.clip_weights(mouse, own_entries > 0))
    pair_weight = ratio / (1.0 - ratio) * clip_weight / jnp.maximum(jnp.sum(others), 1)
    predicted = pair_weight * jnp.sum(jnp.where(others, per_pair, 0.0)) / normaliser
    penalty = model.regularizer() / normaliser
    return recorded + predicted + penalty, {"loss": recorded, "distillation": predicted, "regularizer": penalty}
