"""The training loop: data, model, sharded steps, validation, checkpoints, progress."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import grain
import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from sensorium_jax.config_checks import ConfigError, global_batch_problems, validate_config
from sensorium_jax.data.folds import with_fold_tiers
from sensorium_jax.data.datasets import normalization_mode, open_training_store, oracle_ceiling
from sensorium_jax.data.pipeline import make_sampler, make_train_dataset
from sensorium_jax.data.card import CARD_FILE
from sensorium_jax.data.store import Store
from sensorium_jax.errors import NonFiniteLossError
from sensorium_jax.models import build_model, ensemble
from sensorium_jax.models.losses import configured_loss, loss_scale
from sensorium_jax.training import checkpointing
from sensorium_jax.training.logging_utils import MetricsWriter
from sensorium_jax.training.mesh import DATA_AXIS, global_batch, make_data_mesh, replicate
from sensorium_jax.training.schedules import (
    PlateauState,
    learning_rate_schedule,
    make_optimizer,
    reference_start,
    restores_best,
    schedule_update,
    uses_reference_rule,
)
from sensorium_jax.training.augment import cutmix
from sensorium_jax.training.distillation import load_teacher
from sensorium_jax.training.device_prefetch import DevicePrefetcher
from sensorium_jax.training.interrupts import StopRequest, TrainingInterrupted
from sensorium_jax.training.state import (
    TrainState,
    create_train_state,
    splice_members,
    uses_ema,
    with_best_parameters,
    with_members_best,
)
from sensorium_jax.training.steps import Augment, make_member_train_step, make_predict_step, make_train_step
from sensorium_jax.training.validation import ShardedPredictor, validation_score
from sensorium_jax.training.workdir import WorkdirLock, check_resumable


@dataclasses.dataclass
class TrainingSummary:
    workdir: str
    steps: int
    best_validation_correlation: float
    best_step: int
    oracle_ceiling: float | None
    checkpoint: str
    wall_seconds: float
    # An ensemble's members, each a run of its own: best score and step, and whether it stopped
    # early. The ensemble's `best_validation_correlation` is its mean prediction's score with
    # every member's best parameters (the best checkpoint), `best_step` that checkpoint's step.
    members: list[dict] = dataclasses.field(default_factory=list)

    @property
    def fraction_of_ceiling(self) -> float | None:
        if not self.oracle_ceiling:
            return None
        return self.best_validation_correlation / self.oracle_ceiling

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "fraction_of_ceiling": self.fraction_of_ceiling}


@dataclasses.dataclass
class TrainingSetup:
    """The pieces a training run steps through, built the same way by the trainer and the benchmark."""

    graphdef: nnx.GraphDef
    state: TrainState  # replicated over the mesh
    tx: optax.GradientTransformation
    train_step: Callable[[TrainState, dict], tuple[TrainState, dict]]
    dataset: grain.IterDataset
    frames_lost: int  # frames at the start of a clip the model does not predict
    clip_length: int | None  # a fixed input length (whole trials are predicted in windows)
    members: int = 0  # an ensemble's members (0: a single model)
    member_graph: nnx.GraphDef | None = None  # one member alone (`ensemble.OneMember`)


def ensemble_members(config: ml_collections.ConfigDict) -> int:
    """How many members the run trains as separate runs in one program (0: a single model)."""
    return int(config.model.members) if ensemble.is_ensemble(config.model) else 0


def make_training_dataset(config: ml_collections.ConfigDict, store: Store) -> grain.IterDataset:
    """This process's endless training batches, as `config.data` describes them; an ensemble's
    stack each member's own batches ([members, B, ...], member k's from seed `seed + k`)."""
    members = ensemble_members(config)
    return make_train_dataset(
        store,
        clip_length=config.data.clip_length,
        clips_per_mouse=config.data.clips_per_mouse,
        mouse_sampling=config.data.mouse_sampling,
        batch_size=config.data.batch_size or None,
        seed=config.seed,
        tiers=tuple(config.data.train_tiers),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        read_threads=config.data.read_threads,
        prefetch=config.data.prefetch,
        member_seeds=ensemble.member_seeds(config.seed, members) if members else None,
    )


def member_global_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """An ensemble's [members, B, ...] batch: each member's B sharded on 'data' like `global_batch`."""
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, DATA_AXIS))
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for key, value in local_batch.items()}


def device_batches(dataset: grain.IterDataset, mesh: jax.sharding.Mesh, config: ml_collections.ConfigDict
                   ) -> DevicePrefetcher:
    """The global batches of `dataset`, `data.device_prefetch` of them placed ahead of the step."""
    placement = member_global_batch if ensemble_members(config) else global_batch
    place = functools.partial(placement, mesh=mesh)
    return DevicePrefetcher(iter(dataset), place, int(config.data.device_prefetch))


def build_run_model(config: ml_collections.ConfigDict, card) -> nnx.Module:
    """The model a run with `config.seed` starts from (an ensemble's member k: seed + k's)."""
    if ensemble_members(config):
        return ensemble.build_for_run(config.model, card, config.seed)
    return build_model(config.model, card, nnx.Rngs(config.seed))


def build_training(config: ml_collections.ConfigDict, store: Store, mesh: jax.sharding.Mesh) -> TrainingSetup:
    """Model, optimizer, replicated state, compiled-on-first-use step and dataset of `config`."""
    members = ensemble_members(config)
    model = build_run_model(config, store.card())
    frames_lost, clip_length, canvas = int(model.frames_lost()), model.clip_length, model.input_canvas
    tx = make_optimizer(config.optimizer, learning_rate_schedule(config.schedule, int(config.train.steps)))
    graphdef, state = create_train_state(model, tx, ema=uses_ema(config), members=members)
    state = replicate(state, mesh)
    member_graph = model.member_graph() if members else None
    dataset = make_training_dataset(config, store)
    options = dict(
        augment=make_augment(config.train, canvas), ema_decay=float(config.train.get("ema_decay", 0.0)),
        round_mice=len(store.mice) if config.data.mouse_sampling == "round" else 0,
        loss_scale=loss_scale(config.train.get("loss_scale", "mean"), [store.meta(m).n_trials for m in store.mice]),
    )
    teacher = config.train.get("distill", {}).get("teacher", "")
    if teacher and not members:  # validate_config refuses a teacher for an ensemble
        options["teacher"] = load_teacher(teacher, store.card(), normalization_mode(store),
                                          float(config.train.distill.ratio))
    loss = configured_loss(config.train)
    if members:
        train_step = make_member_train_step(member_graph, tx, loss, mesh,
                                            seeds=ensemble.member_seeds(config.seed, members), impl=model.kernels,
                                            **options)
    else:
        train_step = make_train_step(graphdef, tx, loss, mesh, seed=config.seed, **options)
    del model
    return TrainingSetup(graphdef, state, tx, train_step, dataset, frames_lost, clip_length, members, member_graph)


def steps_per_epoch(config: ml_collections.ConfigDict, store: Store) -> int:
    """Steps of one epoch of `store`'s training clips under `config.data`'s sampling."""
    return make_sampler(store, clip_length=config.data.clip_length, seed=config.seed,
                        clips_per_mouse=config.data.clips_per_mouse, mouse_sampling=config.data.mouse_sampling,
                        batch_size=config.data.batch_size or None, tiers=tuple(config.data.train_tiers)).steps_per_epoch


def resolve_epochs(config: ml_collections.ConfigDict, store: Store) -> ml_collections.ConfigDict:
    """`config` with `train.max_epochs` / `train.eval_every_epochs` (when > 0) turned into
    `train.steps` / `train.eval_every`, so the loop and the schedules count steps only."""
    epochs, every = int(config.train.get("max_epochs", 0)), int(config.train.get("eval_every_epochs", 0))
    if not epochs and not every:
        return config
    per_epoch = steps_per_epoch(config, store)
    resolved = config.copy_and_resolve_references()
    if epochs:
        resolved.train.steps = epochs * per_epoch
    if every:
        resolved.train.eval_every = every * per_epoch
    return resolved


def make_augment(train_config: ml_collections.ConfigDict, canvas: tuple[int, int] | None = None) -> Augment | None:
    """The in-step augmentation `train_config.cutmix` asks for (None: none), its boxes drawn on
    the model's `input_canvas`."""
    options = train_config.get("cutmix")
    if not options or not float(options.get("probability", 0.0)):
        return None
    return functools.partial(cutmix, probability=float(options.probability), alpha=float(options.alpha),
                             canvas=canvas)


def agreed_score(score: float) -> float:
    """Process 0's score on every process.

    Saving the best checkpoint, lowering the rate and stopping all follow from the score and
    all meet at orbax's cross-process barriers, so every process must take the same branch
    even if its own float arithmetic differed in the last bit.
    """
    if jax.process_count() == 1:
        return score
    from jax.experimental import multihost_utils

    return float(multihost_utils.broadcast_one_to_all(np.float32(score)))


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    on_step: Callable[[int], None] | None = None,
    interrupt: StopRequest | None = None,
) -> TrainingSummary:
    """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

    Nothing is read, generated or written before the whole config is checked (`ConfigError`),
    the workdir is locked for the run (process 0) and a resume is refused when the config
    changed in a way the checkpoints cannot follow. On SIGINT/SIGTERM (or `interrupt.request()`)
    the current step finishes, `latest` is saved and `TrainingInterrupted` is raised.
    """
    validate_config(config)
    workdir = Path(workdir)
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        check_resumable(workdir, json.loads(config.to_json_best_effort()))
        return _train_locked(config, workdir, on_step, interrupt or StopRequest())
    finally:
        if lock is not None:
            lock.release()


def _train_locked(
    config: ml_collections.ConfigDict,
    workdir: Path,
    on_step: Callable[[int], None] | None,
    interrupt: StopRequest,
) -> TrainingSummary:
    started = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0

    store = open_training_store(config.data)
    config = resolve_epochs(with_fold_tiers(config), store)  # a fold run trains on the other folds
    if is_main and (config.train.get("max_epochs", 0) or config.train.get("eval_every_epochs", 0)):
        print(f"one epoch is {steps_per_epoch(config, store)} steps: {config.train.steps} steps, "
              f"validation every {config.train.eval_every}")
    card = store.card()
    mice = card.names
    batch_problems = global_batch_problems(config, len(mice), jax.device_count(), jax.process_count())
    if batch_problems:
        raise ConfigError(batch_problems)
    if is_main:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
        (workdir / CARD_FILE).write_text(card.to_json())

    mesh = make_data_mesh()
    total_steps = int(config.train.steps)
    setup = build_training(config, store, mesh)
    graphdef, state = setup.graphdef, setup.state
    iterator = device_batches(setup.dataset, mesh, config)
    runs = MemberRuns.fresh(setup.members)

    checkpoints = checkpointing.Checkpoints(workdir)
    # an ensemble's best checkpoint mixes its members' best steps: only `latest` continues a run
    kinds = (checkpointing.LATEST,) if setup.members else (checkpointing.LATEST, checkpointing.BEST)
    resumed = checkpoints.resume(state, iterator, kinds=kinds)  # the newest intact one; None: a fresh run
    if resumed is not None:
        state, meta = resumed.state, resumed.meta
        runs = MemberRuns.from_meta(meta, setup.members)
        if is_main:
            print(f"Resuming from step {resumed.step} in {resumed.directory}")

    train_step = setup.train_step
    predict_step = make_predict_step(graphdef, mesh)
    member_predict_step = make_predict_step(setup.member_graph, mesh) if setup.members else None
    writer = MetricsWriter(workdir)
    writer.drop_after(int(state.step))  # what a killed run logged after its checkpoint comes again
    eval_every = int(config.train.eval_every)

    def evaluate(predict: Callable[[dict], jax.Array]) -> tuple[float, dict[str, float]]:
        predictor = ShardedPredictor(
            predict,
            mesh,
            config.data.eval_batch_size,
            frames_lost=setup.frames_lost,
            clip_length=setup.clip_length,
        )
        score, per_mouse = validation_score(
            predictor,
            store,
            mice,
            config.data.validation_tier,
            config.train.get("validation_metric", "single_trial"),
            config.data.eval_batch_size,
            config.train.burn_in,
        )
        return agreed_score(score), per_mouse

    def evaluate_model(current: TrainState) -> tuple[float, dict[str, float]]:
        """The whole model (an ensemble: its members' mean)."""
        return evaluate(lambda batch: predict_step(current.inference_params, current.rest, batch))

    def evaluate_member(current: TrainState, k: int) -> tuple[float, dict[str, float]]:
        """Member k alone (a single model is its only member): its slice merged into one member's graph."""
        if not setup.members:
            return evaluate_model(current)
        params = ensemble.member_slice(current.inference_params, k)
        rest = ensemble.member_slice(current.rest, k)
        return evaluate(lambda batch: member_predict_step(params, rest, batch))

    def checkpoint_meta(current: MemberRuns) -> dict:
        return {
            **current.as_meta(),
            "config": json.loads(config.to_json_best_effort()),
            "dataset_card": json.loads(card.to_json(frames_file=CARD_FILE)),  # constants in the workdir's card
            "model": config.model.name,
        }

    def save_best(current: TrainState, improved: np.ndarray, score: float) -> None:
        """The best checkpoint with the `improved` members' parameters of now; an ensemble's other
        members keep theirs (its metric, the mean of the members' best scores, only rises)."""
        if setup.members and checkpoints.latest_step(checkpointing.BEST) is not None:
            checkpoints.wait()
            kept, _ = checkpoints.restore(checkpointing.BEST, current)
            current = splice_members(current, kept, ~improved)
        if setup.members:
            score = float(np.mean([p.best for p in runs.plateaus]))
        checkpoints.save(checkpointing.BEST, step, current, None, checkpoint_meta(runs), score)

    step = int(state.step)
    if step == 0:
        untrained = [evaluate_member(state, k)[0] for k in range(runs.count)]
        writer.write(0, "validation", **runs.validation_record(untrained))
        if is_main:
            print(f"untrained validation correlation: {_scores_text(untrained)}")
        if uses_reference_rule(config.schedule):  # the untrained model is the first best
            runs = runs.replace_plateaus([reference_start(p, u) for p, u in zip(runs.plateaus, untrained)])
            if checkpoints.latest_step(checkpointing.BEST) is None:
                save_best(state, np.ones(runs.count, bool), float(np.mean(untrained)))

    clips_per_step = None
    progress = tqdm(total=total_steps, initial=step, disable=not is_main, desc="train", unit="step", dynamic_ncols=True)
    pending_losses = []
    window_start, window_steps = time.time(), 0
    saved_step = int(state.step)
    interrupt.install()
    try:
        while step < total_steps and not runs.all_stopped:
            batch = next(iterator)
            clips_per_step = int(np.prod(batch["mouse"].shape))
            state, step_metrics = train_step(state, batch)
            step += 1
            window_steps += 1
            pending_losses.append(step_metrics["loss"])
            progress.update(1)
            if on_step is not None:
                on_step(step)
            if step % config.train.log_every == 0 or step % eval_every == 0 or step == total_steps:
                losses = np.asarray(jax.device_get(pending_losses), np.float64)
                pending_losses = []
                if not np.all(np.isfinite(losses)):
                    raise NonFiniteLossError(
                        f"loss became {losses[~np.isfinite(losses)][0]} at or before step {step}; stopped. "
                        f"The last good checkpoint is kept in {checkpoints.root / checkpointing.LATEST}. "
                        "Try a lower learning rate (--config.schedule.learning_rate) or check the data."
                    )
                elapsed = max(time.time() - window_start, 1e-9)
                clips_per_second = window_steps * clips_per_step / elapsed
                window_start, window_steps = time.time(), 0
                progress.set_postfix(loss=f"{losses[-1]:.4f}", clips_s=f"{clips_per_second:.1f}")
                extra = {"member_loss": np.asarray(step_metrics["member_loss"]).tolist()} if setup.members else {}
                parts = {k: v for k, v in step_metrics.items() if k not in ("loss", "member_loss")}  # penalty, ...
                writer.write(step, "train", loss=losses.mean(), clips_per_second=clips_per_second,
                             learning_rate_scale=runs.scale_record(), **parts, **extra)
            if step % eval_every == 0 or step == total_steps:
                scores = {k: evaluate_member(state, k) for k in runs.active_members()}
                previous = runs
                runs, improved, restore = runs.update(config.schedule, {k: v[0] for k, v in scores.items()}, step)
                if restore.any():
                    state = restore_best(checkpoints, state, restore if setup.members else None)
                    for k in np.flatnonzero(restore):
                        progress.write(f"step {step}: {_member_name(setup.members, k)}plateau "
                                       f"{runs.plateaus[k].plateaus}, continuing from the best parameters of "
                                       f"step {runs.plateaus[k].best_step}")
                state = state.replace(lr_scale=replicate(runs.lr_scale(), mesh))
                if setup.members:
                    state = state.replace(active=replicate(runs.active_array(), mesh))
                if setup.members:  # each member's per mouse (None: a stopped member, not scored)
                    per_mouse = {"member_per_mouse": [scores[k][1] if k in scores else None
                                                      for k in range(runs.count)]}
                else:
                    per_mouse = {"per_mouse": scores[0][1]}
                writer.write(step, "validation", **per_mouse,
                             **runs.validation_record([scores[k][0] if k in scores else None
                                                       for k in range(runs.count)]))
                for k, (score, _) in scores.items():
                    progress.write(f"step {step}: {_member_name(setup.members, k)}validation correlation "
                                   f"{score:.4f} (best {runs.plateaus[k].best:.4f})")
                meta = checkpoint_meta(runs)
                checkpoints.save(checkpointing.LATEST, step, state, iterator, meta,
                                 float(np.mean([v[0] for v in scores.values()])))
                saved_step = step
                if improved.any():
                    save_best(state, improved, scores[0][0] if not setup.members else 0.0)
                for k in np.flatnonzero(runs.stopped & ~previous.stopped):
                    p = runs.plateaus[k]
                    progress.write(f"early stopping {_member_name(setup.members, k)}at step {step}: no improvement "
                                   f"after {p.reductions} learning-rate reductions ({p.plateaus} plateaus)")
                if runs.all_stopped:
                    break
            if interrupt.should_stop(step, int(config.train.log_every)):
                if saved_step != step:
                    checkpoints.save(checkpointing.LATEST, step, state, iterator, checkpoint_meta(runs), None)
                raise TrainingInterrupted(f"interrupted at step {step}; checkpoint saved in "
                                          f"{checkpoints.root / checkpointing.LATEST}; "
                                          "rerun the same command to resume")
    finally:
        interrupt.restore()
        progress.close()
        checkpoints.wait()

    if setup.members:
        best_score, best_step = ensemble_best(checkpoints, state, evaluate_model)
    else:
        best_score, best_step = float(runs.plateaus[0].best), int(runs.plateaus[0].best_step)
    checkpoints.close()
    oracle = oracle_ceiling(store, config.data.validation_tier)
    summary = TrainingSummary(
        workdir=str(workdir),
        steps=step,
        best_validation_correlation=best_score,
        best_step=best_step,
        oracle_ceiling=oracle,
        checkpoint=str(checkpoints.root / checkpointing.BEST),
        wall_seconds=time.time() - started,
        members=runs.summary() if setup.members else [],
    )
    if is_main:
        (workdir / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2))
        _print_summary(summary, bool(runs.stopped.all()))
    return summary


@dataclasses.dataclass(frozen=True)
class MemberRuns:
    """The host-side schedule state of each member (a single model: one member whose early stop
    ends the run): its plateau state and whether it stopped. Saved in every checkpoint's meta
    ("plateau": a dict for a single model, one per member for an ensemble, and "stopped")."""

    plateaus: tuple[PlateauState, ...]
    stopped: np.ndarray  # bool [count]
    ensemble: bool

    @classmethod
    def fresh(cls, members: int) -> "MemberRuns":
        count = max(members, 1)
        return cls((PlateauState(),) * count, np.zeros(count, bool), members > 0)

    @classmethod
    def from_meta(cls, meta: dict, members: int) -> "MemberRuns":
        if not members:
            return cls((PlateauState(**meta["plateau"]),), np.zeros(1, bool), False)
        plateaus = tuple(PlateauState(**p) for p in meta["plateau"])
        if len(plateaus) != members:
            raise ValueError(f"the checkpoint holds {len(plateaus)} members' schedules, the config {members}")
        return cls(plateaus, np.asarray(meta["stopped"], bool), True)

    @property
    def count(self) -> int:
        return len(self.plateaus)

    @property
    def all_stopped(self) -> bool:
        return bool(self.stopped.all())

    def active_members(self) -> list[int]:
        return [int(k) for k in np.flatnonzero(~self.stopped)]

    def replace_plateaus(self, plateaus: list[PlateauState]) -> "MemberRuns":
        return dataclasses.replace(self, plateaus=tuple(plateaus))

    def update(self, schedule_config, scores: dict[int, float], step: int
               ) -> tuple["MemberRuns", np.ndarray, np.ndarray]:
        """Each scored member's schedule after its score: (runs, improved [count], restore [count])."""
        plateaus, stopped = list(self.plateaus), self.stopped.copy()
        improved, restore = np.zeros(self.count, bool), np.zeros(self.count, bool)
        for k, score in scores.items():
            plateaus[k], stop = schedule_update(schedule_config, self.plateaus[k], score, step)
            improved[k] = plateaus[k].best_step == step
            restore[k] = restores_best(schedule_config, self.plateaus[k], plateaus[k]) and not stop
            stopped[k] = stop
        return dataclasses.replace(self, plateaus=tuple(plateaus), stopped=stopped), improved, restore

    def lr_scale(self) -> np.ndarray:
        scales = np.asarray([p.scale for p in self.plateaus], np.float32)
        return scales if self.ensemble else scales[0]

    def active_array(self) -> np.ndarray:
        return ~self.stopped

    def scale_record(self) -> float | list[float]:
        scales = [float(p.scale) for p in self.plateaus]
        return scales if self.ensemble else scales[0]

    def validation_record(self, scores: list[float | None]) -> dict:
        """The metrics line of one evaluation; an ensemble's `validation_correlation` is the mean
        of the members scored (each member's own is in `member_validation_correlation`)."""
        if not self.ensemble:
            return {"validation_correlation": scores[0], "learning_rate_scale": self.scale_record()}
        seen = [s for s in scores if s is not None]
        return {"validation_correlation": float(np.mean(seen)) if seen else float("nan"),
                "member_validation_correlation": scores, "learning_rate_scale": self.scale_record()}

    def as_meta(self) -> dict:
        if not self.ensemble:
            return {"plateau": dataclasses.asdict(self.plateaus[0])}
        return {"plateau": [dataclasses.asdict(p) for p in self.plateaus], "stopped": self.stopped.tolist()}

    def summary(self) -> list[dict]:
        return [{"best_validation_correlation": float(p.best), "best_step": int(p.best_step),
                 "stopped_early": bool(stop)} for p, stop in zip(self.plateaus, self.stopped)]


def ensemble_best(checkpoints: checkpointing.Checkpoints, state: TrainState,
                  evaluate_model: Callable[[TrainState], tuple[float, dict]]) -> tuple[float, int]:
    """(score, step) of the ensemble's best checkpoint: every member with its own best
    parameters, scored as the ensemble predicts (the members' mean); (nan, -1) without one."""
    step = checkpoints.latest_step(checkpointing.BEST)
    if step is None:
        return float("nan"), -1
    best, _ = checkpoints.restore(checkpointing.BEST, state)
    return float(evaluate_model(best)[0]), int(step)


def _member_name(members: int, k: int) -> str:
    return f"member {k}: " if members else ""


def _scores_text(scores: list[float]) -> str:
    return f"{scores[0]:.4f}" if len(scores) == 1 else ", ".join(f"{s:.4f}" for s in scores)


def restore_best(checkpoints: checkpointing.Checkpoints, state: TrainState, members: np.ndarray | None = None
                 ) -> TrainState:
    """`state` with the best checkpoint's parameters and BatchNorm statistics (see
    `with_best_parameters`); with `members` (bool [members]) only those members' come back.
    The best checkpoint is the one source, so a resumed run restores exactly what an
    uninterrupted one would."""
    checkpoints.wait()  # its latest save may still be in flight
    best, _ = checkpoints.restore(checkpointing.BEST, state)
    if members is None:
        return with_best_parameters(state, best)
    return with_members_best(state, best, members)


def _print_summary(summary: TrainingSummary, stopped_early: bool) -> None:
    lines = [
        "",
        "Training finished" + (" (early stopping)" if stopped_early else ""),
        f"  steps:                        {summary.steps}",
        f"  best validation correlation:  {summary.best_validation_correlation:.4f} (step {summary.best_step})",
    ]
    if summary.oracle_ceiling:
        lines.append(
            f"  synthetic oracle ceiling:     {summary.oracle_ceiling:.4f} "
            f"(reached {summary.fraction_of_ceiling:.0%})"
        )
    lines += [
        f"  best checkpoint:              {summary.checkpoint}",
        f"  wall time:                    {summary.wall_seconds / 60:.1f} min",
    ]
    print("\n".join(lines))
