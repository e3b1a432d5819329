"""Losses on valid entries only: padded neurons and padded frames never count."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp


def align_targets(batch: Mapping[str, jax.Array], frames_out: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(responses [B, T_out, N], neuron_mask [B, N], frame_mask [B, T_out]) for the last frames.

    Models without temporal padding predict only the last `frames_out` frames of a clip.
    """
    return (
        batch["responses"][:, -frames_out:],
        batch["neuron_mask"],
        batch["frame_mask"][:, -frames_out:],
    )


def valid_mask(neuron_mask: jax.Array, frame_mask: jax.Array) -> jax.Array:
    """[B, T, N] boolean: a valid frame of a real neuron."""
    return frame_mask.astype(bool)[:, :, None] & neuron_mask.astype(bool)[:, None, :]


def poisson_loss(
    predictions: jax.Array,
    responses: jax.Array,
    neuron_mask: jax.Array,
    frame_mask: jax.Array,
    eps: float = 1e-8,
) -> jax.Array:
    """Mean Poisson negative log-likelihood (without log y!) over valid entries, in float32.

    `pred - y * log(pred + eps)`; invalid entries are removed with `where`, so even a NaN or
    an infinity in a padded neuron cannot reach the value or its gradient.
    """
    mask = valid_mask(neuron_mask, frame_mask)
    pred = jnp.where(mask, predictions.astype(jnp.float32), 1.0)
    y = jnp.where(mask, responses.astype(jnp.float32), 0.0)
    per_entry = jnp.where(mask, pred - y * jnp.log(pred + eps), 0.0)
    return jnp.sum(per_entry) / jnp.maximum(jnp.sum(mask), 1)


CORRELATION_EPS = 1.1920929e-07  # float32 machine epsilon, the ViV1T reference's
# ViV1T's weight of the correlation term per valid entry: the reference adds 1000 x the sum over
# neurons of (1 - r) to the Poisson loss summed over a mouse's batch of 6 clips of 126 predicted
# frames (150-frame clips), i.e. 1000 / (6 * 126) per neuron and frame.
VIV1T_CORRELATION_WEIGHT = 1000.0 / (6 * 126)


def correlation_term(
    predictions: jax.Array,
    responses: jax.Array,
    neuron_mask: jax.Array,
    frame_mask: jax.Array,
    eps: float = CORRELATION_EPS,
) -> jax.Array:
    """[B, N]: 1 - r for every clip and neuron, r the neuron's correlation between predictions
    and responses over the clip's valid frames, in float32; 0 for padded neurons and clips
    without a valid frame.

    r = cov / ((std_y + eps) (std_pred + eps)) with population (ddof 0) statistics, as the
    ViV1T reference's `correlation`; a constant series has r = 0. Invalid entries are removed
    with `where` before any arithmetic, and the standard deviations' square roots are taken only
    where the variance is positive, so no NaN or infinite gradient comes out of padding.
    """
    mask = valid_mask(neuron_mask, frame_mask)  # [B, T, N]
    pred = jnp.where(mask, predictions.astype(jnp.float32), 0.0)
    y = jnp.where(mask, responses.astype(jnp.float32), 0.0)
    count = jnp.maximum(jnp.sum(mask, axis=1), 1).astype(jnp.float32)  # [B, N]

    def centred_and_std(v: jax.Array) -> tuple[jax.Array, jax.Array]:
        centred = jnp.where(mask, v - (jnp.sum(v, axis=1) / count)[:, None], 0.0)
        var = jnp.sum(jnp.square(centred), axis=1) / count
        positive = var > 0
        return centred, jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)

    cp, sp = centred_and_std(pred)
    cy, sy = centred_and_std(y)
    r = (jnp.sum(cp * cy, axis=1) / count) / ((sp + eps) * (sy + eps))
    real = neuron_mask.astype(bool) & jnp.any(mask, axis=1)  # neurons with a valid frame
    return jnp.where(real, 1.0 - r, 0.0)


def poisson_correlation_loss(
    predictions: jax.Array,
    responses: jax.Array,
    neuron_mask: jax.Array,
    frame_mask: jax.Array,
    weight: float = VIV1T_CORRELATION_WEIGHT,
) -> jax.Array:
    """ViV1T's loss, Poisson plus a correlation term, per valid entry: (sum of the Poisson terms
    + weight * sum over clips and neurons of valid frames x (1 - r)) / valid entries. For one
    clip that is the mean Poisson loss + weight * the mean over neurons of (1 - r), so the
    balance does not depend on the clip length, and the trainer's per-clip scaling
    (`scaled_loss`) weighs the clips by their entries as for the Poisson loss.

    Deviations: the correlation is over each clip's frames (the trainer evaluates a loss clip
    by clip); the reference's is over the frames of one mouse's batch of 6 clips, with a weight
    per entry that shrinks with the clip length (1000 / (6 x frames)): `weight` is its value
    for its 150-frame clips.
    """
    mask = valid_mask(neuron_mask, frame_mask)
    entries = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
    frames = jnp.sum(mask, axis=1).astype(jnp.float32)  # [B, N] valid frames per clip and neuron
    poisson = poisson_loss(predictions, responses, neuron_mask, frame_mask)
    term = jnp.sum(frames * correlation_term(predictions, responses, neuron_mask, frame_mask))
    return poisson + weight * term / entries


LossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
LOSSES: dict[str, LossFn] = {"poisson": poisson_loss, "poisson_correlation": poisson_correlation_loss}


def get_loss(name: str) -> LossFn:
    """The loss `(predictions, responses, neuron_mask, frame_mask) -> scalar` called `name`."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def loss_option_names(name: str) -> tuple[str, ...]:
    """The options loss `name` takes (`train.loss_options`): its parameters after the four
    every loss takes (predictions, responses, neuron_mask, frame_mask)."""
    parameters = list(inspect.signature(get_loss(name)).parameters.values())[4:]
    return tuple(p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD)


def configured_loss(train_config) -> LossFn:
    """`train.loss` with `train.loss_options` bound: the loss the trainer and the bench use."""
    return functools.partial(get_loss(train_config.loss), **train_config.get("loss_options", {}))


LOSS_SCALES = ("mean", "reference")


@dataclasses.dataclass(frozen=True)
class LossScale:
    """How a batch's per-entry losses become the training loss (`train.loss_scale`).

    - "mean": the mean over valid entries (sum / number of valid entries).
    - "reference": as the SENSORIUM 2023 trainer (`standard_trainer.full_objective`, Poisson
      with `avg=False`, `scale_loss=True`): summed over entries, each clip of mouse m weighted by
      sqrt(trials[m] / clips of mouse m in the batch); the reference adds one such term per
      mouse batch and steps once per round over all mice, which is one step over a batch of
      all mice here. `trials[m]` is the reference's `len(dataloader.dataset)`: every trial of
      the mouse's folder (its sampler, not its dataset, picks the training tier).

    The model's penalty (`Model.regularizer`, in summed-loss units) is divided by the same
    `normaliser` as the data term, so its weight against the data is the reference's in both.
    """

    mode: str = "mean"
    trials: tuple[float, ...] = ()  # per mouse of the card, for "reference"

    def __post_init__(self) -> None:
        if self.mode not in LOSS_SCALES:
            raise ValueError(f"loss_scale must be one of {', '.join(LOSS_SCALES)}, got {self.mode!r}")
        if self.mode == "reference" and not self.trials:
            raise ValueError('loss_scale "reference" needs the number of trials of every mouse')

    def clip_weights(self, mouse: jax.Array, valid: jax.Array) -> jax.Array:
        """[B] weights of the clips' summed losses; `valid` [B] marks clips with valid entries."""
        if self.mode == "mean":
            return jnp.ones(mouse.shape, jnp.float32)
        trials = jnp.asarray(self.trials, jnp.float32)
        clips = jnp.zeros(trials.shape, jnp.float32).at[mouse].add(valid.astype(jnp.float32))
        return jnp.sqrt(trials[mouse] / jnp.maximum(clips[mouse], 1.0))

    def normaliser(self, entries: jax.Array) -> jax.Array:
        """What the weighted sum (and the penalty) is divided by, given the valid entry count."""
        if self.mode == "mean":
            return jnp.maximum(entries, 1.0)
        return jnp.ones((), jnp.float32)


def loss_scale(name: str, trials: Sequence[float] = ()) -> LossScale:
    """The `LossScale` of `train.loss_scale` = `name`; `trials`: every mouse's trial count, in
    the card's order (only "reference" reads them)."""
    return LossScale(name, tuple(float(t) for t in trials) if name == "reference" else ())


def scaled_loss(
    loss_fn: LossFn,
    predictions: jax.Array,
    responses: jax.Array,
    neuron_mask: jax.Array,
    frame_mask: jax.Array,
    mouse: jax.Array,
    scale: LossScale,
) -> tuple[jax.Array, jax.Array]:
    """(data loss, normaliser): each clip's summed loss (its `loss_fn` mean times its valid
    entry count), weighted by `scale.clip_weights`, summed, divided by `scale.normaliser`.

    With "mean" this is `loss_fn` over the whole batch; one path serves both scales.
    """
    entries = jnp.sum(valid_mask(neuron_mask, frame_mask), axis=(1, 2)).astype(jnp.float32)  # [B]
    per_clip = jax.vmap(lambda p, r, n, f: loss_fn(p[None], r[None], n[None], f[None]))(
        predictions, responses, neuron_mask, frame_mask
    )
    weights = scale.clip_weights(jnp.asarray(mouse, jnp.int32), entries > 0)
    normaliser = scale.normaliser(jnp.sum(entries))
    return jnp.sum(weights * per_clip * entries) / normaliser, normaliser
