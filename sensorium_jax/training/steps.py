"""Pure, jit-compiled train and predict steps over the ('data',) mesh."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sensorium_jax.models import Model, align_targets
from sensorium_jax.models.losses import LossScale, scaled_loss
from sensorium_jax.training.distillation import TEACHER_RATES, Teacher, distillation_loss, teacher_rates
from sensorium_jax.training.mesh import DATA_AXIS, replicate, replicated
from sensorium_jax.training.state import TrainState

LossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
Augment = Callable[[dict, jax.Array], dict]


def model_loss(
    model: Model, batch: dict, loss_fn: LossFn, scale: LossScale = LossScale()
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss to differentiate, metrics to report) of a model in training mode.

    The loss is the data loss (`scale`: the mean over valid entries, or the reference's sum
    times sqrt(trials / clips) per mouse) plus the model's penalty (`Model.regularizer`, divided
    by the same normaliser). The members' data losses are summed and an ensemble's penalty is
    its members' sum, so each member gets exactly its own gradient. Reported per member (means
    over the members): "loss", the data loss; "regularizer", the penalty in the loss's units.
    """
    predictions = model.member_predictions(batch, train=True)  # [E, B, T, N]
    targets, neuron_mask, frame_mask = align_targets(batch, predictions.shape[2])
    data, normaliser = jax.vmap(
        lambda p: scaled_loss(loss_fn, p, targets, neuron_mask, frame_mask, batch["mouse"], scale)
    )(predictions)
    penalty = model.regularizer() / normaliser[0]  # the masks, hence the normaliser, are shared
    members = predictions.shape[0]
    return jnp.sum(data) + penalty, {"loss": jnp.mean(data), "regularizer": penalty / members}


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """The EMA's decay at `step`: short at first ((1 + step) / (10 + step)) so the average is not
    dominated by the random initialisation in short runs, then `decay`."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


Update = Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]


def make_update(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    mesh: jax.sharding.Mesh,
    *,
    augment: Augment | None = None,
    ema_decay: float = 0.0,
    round_mice: int = 0,
    loss_scale: LossScale = LossScale(),
    teacher: Teacher | None = None,
) -> Update:
    """`update(state, batch, base_key[, teacher_variables]) -> (state, metrics)`: one optimizer
    step of one model, not compiled, so that a single run jits it and an ensemble maps it over its
    members (each member then gets exactly the step its separate run would take). With a
    `teacher` the loss is `distillation.distillation_loss` on its rates, computed from
    `teacher_variables`. See `make_train_step`."""

    def update(state: TrainState, batch: dict, base_key: jax.Array,
               teacher_variables: dict | None = None) -> tuple[TrainState, dict]:
        if augment is not None:
            batch = augment(batch, jax.random.fold_in(base_key, state.step))
        if teacher is not None:
            batch = {**batch, TEACHER_RATES: teacher_rates(teacher.graphdef, teacher_variables, batch,
                                                           len(teacher.neuron_counts))}

        def objective(params, rest, batch):
            model = nnx.merge(graphdef, params, rest, copy=True)
            if teacher is None:
                loss, reported = model_loss(model, batch, loss_fn, loss_scale)
            else:
                loss, reported = distillation_loss(model, batch, loss_fn, loss_scale, teacher.ratio,
                                                   teacher.neuron_counts)
            _, _, new_rest = nnx.split(model, nnx.Param, ...)
            return loss, (reported, new_rest)

        gradient = jax.value_and_grad(objective, has_aux=True)
        if round_mice:
            metrics, rest, grads = round_gradients(gradient, state.params, state.rest, batch, round_mice, mesh)
        else:
            (_, (metrics, rest)), grads = gradient(state.params, state.rest, batch)
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
        return new_state, metrics

    return traced_on(mesh, update)


def traced_on(mesh: jax.sharding.Mesh, function: Callable) -> Callable:
    """`function`, traced with `mesh` as the ambient mesh: kernels that loop over chunks of the
    batch's frames read it to keep each chunk split over the devices as the batch is
    (`kernels.frame_chunks`) instead of gathering the batch onto every device."""
    def on_mesh(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return function(*args, **kwargs)

    return on_mesh


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    mesh: jax.sharding.Mesh,
    *,
    augment: Augment | None = None,
    ema_decay: float = 0.0,
    seed: int = 0,
    round_mice: int = 0,
    loss_scale: LossScale = LossScale(),
    teacher: Teacher | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """One optimizer step. The state buffers are donated; the batch is sharded on 'data',
    so BatchNorm statistics and the loss are over the global batch.

    With `round_mice` > 0 the batch is a round of that many mice (`mouse_sampling="round"`,
    clip-major rows): one forward/backward per mouse on its own clips, in mouse order, so
    BatchNorm statistics are per mouse and its running averages are updated mouse after mouse,
    then one update with the summed gradients (the reference trainer's accumulation over one
    batch of each mouse). The reported loss is the mean over the mice.

    `augment(batch, key)` runs inside the step with a key derived from `seed` and the step
    number (so a resumed run draws the same augmentations); with `ema_decay` > 0 the state's
    `ema_params` follow the parameters. A `teacher`'s variables are replicated once and passed
    to the compiled step as arguments (never baked into the program as constants).
    """
    update = make_update(graphdef, tx, loss_fn, mesh, augment=augment, ema_decay=ema_decay, round_mice=round_mice,
                         loss_scale=loss_scale, teacher=teacher)
    base_key = jax.random.key(seed)

    rep = replicated(mesh)
    if teacher is None:
        def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
            return update(state, batch, base_key)

        return jax.jit(train_step, out_shardings=(rep, rep), donate_argnums=0)

    def distilled_step(state: TrainState, batch: dict, teacher_variables: dict) -> tuple[TrainState, dict]:
        return update(state, batch, base_key, teacher_variables)

    return WithTeacher(jax.jit(distilled_step, out_shardings=(rep, rep), donate_argnums=0),
                       replicate(teacher.variables, mesh))


class WithTeacher:
    """A compiled step of (state, batch, teacher variables) called as one of (state, batch),
    the teacher's variables bound once; `lower` as a jitted function's (benchmarks compile it)."""

    def __init__(self, step: Callable, teacher_variables: dict):
        self.step, self.teacher_variables = step, teacher_variables
        self.__name__ = "distilled_step"

    def __call__(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        return self.step(state, batch, self.teacher_variables)

    def lower(self, state: TrainState, batch: dict):
        return self.step.lower(state, batch, self.teacher_variables)


def make_member_train_step(
    member_graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    mesh: jax.sharding.Mesh,
    *,
    seeds: Sequence[int],
    impl: str = "native",
    augment: Augment | None = None,
    ema_decay: float = 0.0,
    round_mice: int = 0,
    loss_scale: LossScale = LossScale(),
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """One optimizer step of every member of an ensemble, each on its own batch.

    The state's member fields (parameters, rest, optimizer state, EMA, `lr_scale`, `active`)
    are stacked on a leading member axis, and so is the batch ([members, B, ...], B sharded on
    'data'). Member k takes exactly the step of a separate run with seed `seeds[k]`: its own
    batch, augmentation key, BatchNorm statistics, dropout keys, optimizer state (gradient
    clipping by global norm is the member's own norm) and learning-rate scale; a member whose
    `active` is False is frozen (its fields keep their values). "native" `impl` vmaps the
    members, "folded"/"matmul" run them one after another in the program (as
    `kernels.run_members`). Metrics: "loss"/"regularizer" the means over the active members,
    "member_loss" [members].
    """
    update = make_update(member_graphdef, tx, loss_fn, mesh, augment=augment, ema_decay=ema_decay,
                         round_mice=round_mice, loss_scale=loss_scale)
    keys = jnp.stack([jax.random.key(int(s)) for s in seeds])

    def one(step, fields, lr_scale, active, batch, key):
        params, rest, opt_state, ema_params = fields
        state = TrainState(step=step, params=params, rest=rest, opt_state=opt_state, lr_scale=lr_scale,
                           ema_params=ema_params)
        new, metrics = update(state, batch, key)
        updated = (new.params, new.rest, new.opt_state, new.ema_params)
        return jax.tree.map(lambda n, o: jnp.where(active, n, o), updated, fields), metrics

    each = map_members(one, len(seeds), impl, in_axes=(None, 0, 0, 0, 0, 0))

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        fields = (state.params, state.rest, state.opt_state, state.ema_params)
        (params, rest, opt_state, ema_params), metrics = each(state.step, fields, state.lr_scale, state.active,
                                                              batch, keys)
        weights = state.active.astype(jnp.float32) / jnp.maximum(jnp.sum(state.active), 1)
        reported = {name: jnp.sum(value * weights) for name, value in metrics.items()}
        reported["member_loss"] = metrics["loss"]
        new_state = state.replace(step=state.step + 1, params=params, rest=rest, opt_state=opt_state,
                                  ema_params=ema_params)
        return new_state, reported

    rep = replicated(mesh)
    return jax.jit(train_step, out_shardings=(rep, rep), donate_argnums=0)


def map_members(fn: Callable, count: int, impl: str, in_axes: tuple) -> Callable:
    """`fn` over `count` members stacked on the leading axis of the arguments whose `in_axes`
    is 0 (None: shared): vmapped ("native") or one member after another ("folded"/"matmul")."""
    if impl == "native":
        return jax.vmap(fn, in_axes=in_axes)

    def looped(*args):
        results = [fn(*(a if axis is None else jax.tree.map(lambda x, k=k: x[k], a)
                        for a, axis in zip(args, in_axes, strict=True)))
                   for k in range(count)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *results)

    return looped


def split_round(batch: dict, mice: int, mesh: jax.sharding.Mesh) -> dict:
    """[mice * clips, ...] clip-major rows -> [mice, clips, ...], each mouse's clips sharded on 'data'.

    The sampler's clip-major order makes this local: every device already holds a share of
    every mouse's clips."""
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, DATA_AXIS))

    def split(x: jax.Array) -> jax.Array:
        per_mouse = jnp.swapaxes(x.reshape(x.shape[0] // mice, mice, *x.shape[1:]), 0, 1)
        return jax.lax.with_sharding_constraint(per_mouse, sharding)

    return jax.tree.map(split, batch)


def round_gradients(gradient: Callable, params: nnx.State, rest: nnx.State, batch: dict, mice: int,
                    mesh: jax.sharding.Mesh) -> tuple[dict, nnx.State, nnx.State]:
    """(reported metrics averaged over the mice, state after the last mouse, summed gradients)
    of one round of mice, taken one mouse after another with `gradient(params, rest, batch)`."""

    def one_mouse(carry, mouse_batch):
        rest, total = carry
        (_, (reported, rest)), grads = gradient(params, rest, mouse_batch)
        return (rest, jax.tree.map(jnp.add, total, grads)), reported

    zeros = jax.tree.map(jnp.zeros_like, params)
    (rest, grads), losses = jax.lax.scan(one_mouse, (rest, zeros), split_round(batch, mice, mesh))
    return jax.tree.map(jnp.mean, losses), rest, grads


def make_predict_step(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh) -> Callable[[nnx.State, nnx.State, dict], jax.Array]:
    """Evaluation-mode predictions [B, T_out, Nmax], replicated so every process can read them."""

    def predict(params: nnx.State, rest: nnx.State, batch: dict) -> jax.Array:
        model = nnx.merge(graphdef, params, rest, copy=True)
        return model(batch, train=False).astype(jnp.float32)

    return jax.jit(traced_on(mesh, predict), out_shardings=replicated(mesh))
