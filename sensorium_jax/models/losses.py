"""Losses on valid entries only: padded neurons and padded frames never count."""

from __future__ import annotations

import dataclasses
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


LossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
LOSSES: dict[str, LossFn] = {"poisson": poisson_loss}


def get_loss(name: str) -> LossFn:
    """The loss `(predictions, responses, neuron_mask, frame_mask) -> scalar` called `name`."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


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
