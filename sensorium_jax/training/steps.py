"""Pure, jit-compiled train and predict steps over the ('data',) mesh."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sensorium_jax.models import align_targets
from sensorium_jax.training.mesh import replicated
from sensorium_jax.training.state import TrainState

LossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    mesh: jax.sharding.Mesh,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """One optimizer step. The state buffers are donated; the batch is sharded on 'data',
    so BatchNorm statistics and the loss are over the global batch."""

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        def objective(params):
            model = nnx.merge(graphdef, params, state.rest, copy=True)
            predictions = model(batch, train=True)
            targets, neuron_mask, frame_mask = align_targets(batch, predictions.shape[1])
            loss = loss_fn(predictions, targets, neuron_mask, frame_mask)
            _, _, new_rest = nnx.split(model, nnx.Param, ...)
            return loss, new_rest

        (loss, rest), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        updates = jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, rest=rest, opt_state=opt_state)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return new_state, metrics

    rep = replicated(mesh)
    return jax.jit(train_step, out_shardings=(rep, rep), donate_argnums=0)


def make_predict_step(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh) -> Callable[[nnx.State, nnx.State, dict], jax.Array]:
    """Evaluation-mode predictions [B, T_out, Nmax], replicated so every process can read them."""

    def predict(params: nnx.State, rest: nnx.State, batch: dict) -> jax.Array:
        model = nnx.merge(graphdef, params, rest, copy=True)
        return model(batch, train=False).astype(jnp.float32)

    return jax.jit(predict, out_shardings=replicated(mesh))
