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
    # An ensemble's members still training (bool [members]; None for a single model). With
    # members, every field but `step` is stacked on a leading member axis (`lr_scale` too).
    active: jax.Array | None = None

    @property
    def inference_params(self) -> nnx.State:
        return self.params if self.ema_params is None else self.ema_params


def create_train_state(
    model: nnx.Module, tx: optax.GradientTransformation, *, ema: bool = False, members: int = 0
) -> tuple[nnx.GraphDef, TrainState]:
    """The state of a fresh run. With `members` > 0 the model's state is stacked on a leading
    member axis and each member gets its own optimizer state (initialised per member, so
    counts, moments and any global-norm clipping are the member's own), scale and `active` flag.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    shape = (members,) if members else ()
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=jax.vmap(tx.init)(params) if members else tx.init(params),
        lr_scale=jnp.ones(shape, jnp.float32),
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        active=jnp.ones(shape, bool) if members else None,
    )
    return graphdef, state


def with_best_parameters(state: TrainState, best: TrainState) -> TrainState:
    """`state` continuing from `best`'s parameters, EMA and BatchNorm statistics.

    What the reference's `model.load_state_dict(best)` brings back (parameters and buffers); the
    optimizer's moments, the step, the learning-rate scale and RNG state go on, as there.
    """
    rest = jax.tree.map(lambda now, then: then if isinstance(now, nnx.BatchStat) else now, state.rest, best.rest,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))
    return state.replace(params=best.params, rest=rest, ema_params=best.ema_params)


MEMBER_FIELDS = ("params", "rest", "opt_state", "ema_params")


def splice_members(state: TrainState, other: TrainState, chosen: Any) -> TrainState:
    """`state` with the member-stacked fields of the `chosen` members (bool [members]) taken
    from `other`; `step`, `lr_scale` and `active` stay `state`'s."""
    chosen = jnp.asarray(chosen, bool)

    def pick(mine: jax.Array, theirs: jax.Array) -> jax.Array:
        return jnp.where(chosen.reshape(chosen.shape + (1,) * (mine.ndim - 1)), theirs, mine)

    return state.replace(**{name: jax.tree.map(pick, getattr(state, name), getattr(other, name))
                            for name in MEMBER_FIELDS})


def with_members_best(state: TrainState, best: TrainState, chosen: Any) -> TrainState:
    """`state` with the `chosen` members continuing from their best parameters, EMA and
    BatchNorm statistics (`with_best_parameters`, member by member); the others go on."""
    return splice_members(state, with_best_parameters(state, best), chosen)


def uses_ema(config) -> bool:
    """Whether a training config keeps an EMA of the parameters (older configs have no field)."""
    return float(config.train.get("ema_decay", 0.0) or 0.0) > 0.0


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton, the restore target orbax needs."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )
