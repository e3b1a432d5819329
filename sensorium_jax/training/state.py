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
    # An exponential moving average of the parameters (None without one); when present,
    # validation, checkpoints' users and `load` predict with it.
    ema_params: nnx.State | None = None

    @property
    def inference_params(self) -> nnx.State:
        return self.params if self.ema_params is None else self.ema_params


def create_train_state(
    model: nnx.Module, tx: optax.GradientTransformation, *, ema: bool = False
) -> tuple[nnx.GraphDef, TrainState]:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=tx.init(params),
        lr_scale=jnp.ones((), jnp.float32),
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
    )
    return graphdef, state


def uses_ema(config) -> bool:
    """Whether a training config keeps an EMA of the parameters (older configs have no field)."""
    return float(config.train.get("ema_decay", 0.0) or 0.0) > 0.0


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton, the restore target orbax needs."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )
