"""The train state: a plain pytree, so jit, sharding and orbax treat it like any array tree."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar
    params: nnx.State
    rest: nnx.State  # BatchNorm statistics, RNG state: everything that is not a parameter
    opt_state: optax.OptState
    lr_scale: jax.Array  # float32 scalar, set by the host-side plateau schedule


def create_train_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=tx.init(params),
        lr_scale=jnp.ones((), jnp.float32),
    )
    return graphdef, state


def merge_model(graphdef: nnx.GraphDef, state: TrainState) -> nnx.Module:
    """An eager model holding the state's current values (for inference and inspection)."""
    return nnx.merge(graphdef, state.params, state.rest)


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton, the restore target orbax needs."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )
