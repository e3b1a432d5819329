"""Losses on valid entries only: padded neurons and padded frames never count."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
