"""Pure, jit-compiled train and predict steps over the ('data',) mesh."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sensorium_jax.models import Model, align_targets
from sensorium_jax.training.mesh import replicated
from sensorium_jax.training.state import TrainState

LossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
Augment = Callable[[dict, jax.Array], dict]


def model_loss(model: Model, batch: dict, loss_fn: LossFn) -> tuple[jax.Array, jax.Array]:
    """(loss to differentiate, loss to report) of a model in training mode.

    The members' losses are summed (an ensemble's members each get exactly their own gradient);
    the reported loss is their mean. A single model is one member.
    """
    predictions = model.member_predictions(batch, train=True)  # [E, B, T, N]
    targets, neuron_mask, frame_mask = align_targets(batch, predictions.shape[2])
    if predictions.shape[0] == 1:
        loss = loss_fn(predictions[0], targets, neuron_mask, frame_mask)
        return loss, loss
    losses = jax.vmap(lambda p: loss_fn(p, targets, neuron_mask, frame_mask))(predictions)
    return jnp.sum(losses), jnp.mean(losses)


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """The EMA's decay at `step`: short at first ((1 + step) / (10 + step)) so the average is not
    dominated by the random initialisation in short runs, then `decay`."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    mesh: jax.sharding.Mesh,
    *,
    augment: Augment | None = None,
    ema_decay: float = 0.0,
    seed: int = 0,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """One optimizer step. The state buffers are donated; the batch is sharded on 'data',
    so BatchNorm statistics and the loss are over the global batch.

    `augment(batch, key)` runs inside the step with a key derived from `seed` and the step
    number (so a resumed run draws the same augmentations); with `ema_decay` > 0 the state's
    `ema_params` follow the parameters.
    """
    base_key = jax.random.key(seed)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        if augment is not None:
            batch = augment(batch, jax.random.fold_in(base_key, state.step))

        def objective(params):
            model = nnx.merge(graphdef, params, state.rest, copy=True)
            loss, reported = model_loss(model, batch, loss_fn)
            _, _, new_rest = nnx.split(model, nnx.Param, ...)
            return loss, (reported, new_rest)

        (_, (loss, rest)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        updates = jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
        params = optax.apply_updates(state.params, updates)
        ema_params = state.ema_params
        if ema_params is not None and ema_decay > 0:
            d = ema_decay_at(state.step, ema_decay)
            ema_params = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, params)
        new_state = state.replace(
            step=state.step + 1, params=params, rest=rest, opt_state=opt_state, ema_params=ema_params
        )
        return new_state, {"loss": loss}

    rep = replicated(mesh)
    return jax.jit(train_step, out_shardings=(rep, rep), donate_argnums=0)


def make_predict_step(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh) -> Callable[[nnx.State, nnx.State, dict], jax.Array]:
    """Evaluation-mode predictions [B, T_out, Nmax], replicated so every process can read them."""

    def predict(params: nnx.State, rest: nnx.State, batch: dict) -> jax.Array:
        model = nnx.merge(graphdef, params, rest, copy=True)
        return model(batch, train=False).astype(jnp.float32)

    return jax.jit(predict, out_shardings=replicated(mesh))
