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
from sensorium_jax.data.datasets import open_training_store, oracle_ceiling
from sensorium_jax.data.pipeline import make_train_dataset
from sensorium_jax.data.store import Store
from sensorium_jax.errors import NonFiniteLossError
from sensorium_jax.models import build_model, get_loss
from sensorium_jax.training import checkpointing
from sensorium_jax.training.logging_utils import MetricsWriter
from sensorium_jax.training.mesh import global_batch, make_data_mesh, replicate
from sensorium_jax.training.schedules import (
    PlateauState,
    learning_rate_schedule,
    make_optimizer,
    plateau_update,
)
from sensorium_jax.training.augment import cutmix
from sensorium_jax.training.device_prefetch import DevicePrefetcher
from sensorium_jax.training.interrupts import StopRequest, TrainingInterrupted
from sensorium_jax.training.state import TrainState, create_train_state, uses_ema
from sensorium_jax.training.steps import Augment, make_predict_step, make_train_step
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


def make_training_dataset(config: ml_collections.ConfigDict, store: Store) -> grain.IterDataset:
    """This process's endless training batches, as `config.data` describes them."""
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
    )


def device_batches(dataset: grain.IterDataset, mesh: jax.sharding.Mesh, config: ml_collections.ConfigDict
                   ) -> DevicePrefetcher:
    """The global batches of `dataset`, `data.device_prefetch` of them placed ahead of the step."""
    place = functools.partial(global_batch, mesh=mesh)
    return DevicePrefetcher(iter(dataset), place, int(config.data.device_prefetch))


def build_training(config: ml_collections.ConfigDict, store: Store, mesh: jax.sharding.Mesh) -> TrainingSetup:
    """Model, optimizer, replicated state, compiled-on-first-use step and dataset of `config`."""
    model = build_model(config.model, store.card(), nnx.Rngs(config.seed))
    frames_lost, clip_length = int(model.frames_lost()), model.clip_length
    tx = make_optimizer(config.optimizer, learning_rate_schedule(config.schedule, int(config.train.steps)))
    graphdef, state = create_train_state(model, tx, ema=uses_ema(config))
    state = replicate(state, mesh)
    del model
    dataset = make_training_dataset(config, store)
    train_step = make_train_step(
        graphdef, tx, get_loss(config.train.loss), mesh,
        augment=make_augment(config.train), ema_decay=float(config.train.get("ema_decay", 0.0)), seed=config.seed,
    )
    return TrainingSetup(graphdef, state, tx, train_step, dataset, frames_lost, clip_length)


def make_augment(train_config: ml_collections.ConfigDict) -> Augment | None:
    """The in-step augmentation `train_config.cutmix` asks for (None: none)."""
    options = train_config.get("cutmix")
    if not options or not float(options.get("probability", 0.0)):
        return None
    return functools.partial(cutmix, probability=float(options.probability), alpha=float(options.alpha))


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
    card = store.card()
    mice = card.names
    batch_problems = global_batch_problems(config, len(mice), jax.device_count(), jax.process_count())
    if batch_problems:
        raise ConfigError(batch_problems)
    if is_main:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
        (workdir / "dataset_card.json").write_text(card.to_json())

    mesh = make_data_mesh()
    total_steps = int(config.train.steps)
    setup = build_training(config, store, mesh)
    graphdef, state = setup.graphdef, setup.state
    iterator = device_batches(setup.dataset, mesh, config)

    checkpoints = checkpointing.Checkpoints(workdir)
    plateau = PlateauState()
    resumed = checkpoints.resume(state, iterator)  # the newest intact one; None: a fresh run
    if resumed is not None:
        state, meta = resumed.state, resumed.meta
        plateau = PlateauState(**meta["plateau"])
        if is_main:
            print(f"Resuming from step {resumed.step} in {resumed.directory}")

    train_step = setup.train_step
    predict_step = make_predict_step(graphdef, mesh)
    writer = MetricsWriter(workdir)
    writer.drop_after(int(state.step))  # what a killed run logged after its checkpoint comes again
    eval_every = int(config.train.eval_every)

    def evaluate(current) -> tuple[float, dict[str, float]]:
        predictor = ShardedPredictor(
            lambda batch: predict_step(current.inference_params, current.rest, batch),
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

    def checkpoint_meta(current_plateau: PlateauState) -> dict:
        return {
            "plateau": dataclasses.asdict(current_plateau),
            "config": json.loads(config.to_json_best_effort()),
            "dataset_card": json.loads(card.to_json()),
            "model": config.model.name,
        }

    step = int(state.step)
    if step == 0:
        initial_score, _ = evaluate(state)
        writer.write(0, "validation", validation_correlation=initial_score)
        if is_main:
            print(f"untrained validation correlation: {initial_score:.4f}")

    clips_per_step = None
    progress = tqdm(total=total_steps, initial=step, disable=not is_main, desc="train", unit="step", dynamic_ncols=True)
    pending_losses = []
    window_start, window_steps = time.time(), 0
    stopped_early = False
    saved_step = int(state.step)
    interrupt.install()
    try:
        while step < total_steps:
            batch = next(iterator)
            clips_per_step = batch["mouse"].shape[0]
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
                writer.write(step, "train", loss=losses.mean(), clips_per_second=clips_per_second,
                             learning_rate_scale=plateau.scale)
            if step % eval_every == 0 or step == total_steps:
                score, per_mouse = evaluate(state)
                improved = score > plateau.best + 1e-6
                plateau, stop = plateau_update(
                    plateau, score, step,
                    factor=config.schedule.plateau_factor,
                    patience=config.schedule.plateau_patience,
                    max_reductions=config.schedule.max_reductions,
                )
                if config.schedule.name != "plateau":
                    plateau, stop = dataclasses.replace(plateau, scale=1.0), False
                state = state.replace(lr_scale=replicate(np.float32(plateau.scale), mesh))
                writer.write(step, "validation", validation_correlation=score, per_mouse=per_mouse,
                             learning_rate_scale=plateau.scale)
                progress.write(f"step {step}: validation correlation {score:.4f} (best {plateau.best:.4f})")
                meta = checkpoint_meta(plateau)
                checkpoints.save(checkpointing.LATEST, step, state, iterator, meta, score)
                saved_step = step
                if improved:
                    checkpoints.save(checkpointing.BEST, step, state, None, meta, score)
                if stop:
                    stopped_early = True
                    progress.write(f"early stopping at step {step}: no improvement after "
                                   f"{plateau.reductions} learning-rate reductions")
                    break
            if interrupt.should_stop(step, int(config.train.log_every)):
                if saved_step != step:
                    checkpoints.save(checkpointing.LATEST, step, state, iterator, checkpoint_meta(plateau), None)
                raise TrainingInterrupted(f"interrupted at step {step}; checkpoint saved in "
                                          f"{checkpoints.root / checkpointing.LATEST}; "
                                          "rerun the same command to resume")
    finally:
        interrupt.restore()
        progress.close()
        checkpoints.wait()

    checkpoints.close()
    oracle = oracle_ceiling(store, config.data.validation_tier)
    summary = TrainingSummary(
        workdir=str(workdir),
        steps=step,
        best_validation_correlation=float(plateau.best),
        best_step=int(plateau.best_step),
        oracle_ceiling=oracle,
        checkpoint=str(checkpoints.root / checkpointing.BEST),
        wall_seconds=time.time() - started,
    )
    if is_main:
        (workdir / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2))
        _print_summary(summary, stopped_early)
    return summary


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
