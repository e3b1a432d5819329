"""Default experiment settings; every file in configs/ starts from these and overrides data.

Configs are data (ml_collections), so any field can be set from the command line with
`--config.section.key=value`. A config file's `get_config(variant)` takes the text after ':'
of `--config configs/<file>.py:<variant>`; configs reuse each other through `load_config`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import ml_collections

from sensorium_jax.data.kinds import BURN_IN_FRAMES


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = data = ml_collections.ConfigDict()
    data.store = ""  # a converted store; empty: the synthetic digital mouse below
    data.synthetic_preset = "small"
    data.synthetic_seed = 0
    data.synthetic_mice = 0  # 0: the preset's number of mice
    # "video" (SENSORIUM 2023 clips) or "static" (SENSORIUM 2022 images: clip_length 1, burn_in 0,
    # validation_tier "validation"; configs/static_baseline.py sets them)
    data.synthetic_kind = "video"
    data.cache_dir = ""  # empty: $XDG_CACHE_HOME/sensorium_jax or ~/.cache/sensorium_jax
    data.clip_length = 80
    data.clips_per_mouse = 8
    # "all": every mouse in every batch; "uniform": mice drawn uniformly; "round": every mouse's
    # clips, one forward/backward per mouse (BatchNorm per mouse) and one step on the summed gradients
    data.mouse_sampling = "all"
    data.batch_size = 0  # with mouse_sampling="uniform": clips per batch
    data.train_tiers = ("train",)
    data.validation_tier = "oracle"
    # Cross-validation folds over the labelled trials, grouped by stimulus (sensorium_jax.data.folds):
    # fold k >= 0 trains on the other folds and validates on fold k (train_tiers and
    # validation_tier are then set from it); -1: the tiers as stored.
    data.fold = -1
    data.n_folds = 7
    data.fold_tiers = ("train", "oracle")  # the labelled tiers the folds split
    data.eval_batch_size = 8
    data.read_threads = 2
    data.prefetch = 2  # batches read ahead (>= read_threads); memory ~ batch bytes x (prefetch + 2)
    data.device_prefetch = 2  # global batches placed on the devices ahead of the step (0: none)
    # How inputs and responses are normalized (sensorium_jax.data.normalization): "auto" (per
    # frame where the source has per-frame statistics, else per neuron), "per_neuron",
    # "per_frame", or "none" (raw inputs and targets; submissions still divided by the std).
    data.normalization = "auto"

    config.model = ml_collections.ConfigDict()  # filled from the model registry's defaults

    config.optimizer = optimizer = ml_collections.ConfigDict()
    optimizer.name = "adamw"
    optimizer.weight_decay = 0.0
    optimizer.grad_clip_norm = 0.0
    # Parts of the model with rates and weight decays of their own (torch's parameter groups):
    # {group: {"modules": (names,), "learning_rate_scale": s, "weight_decay": w}}; see schedules.
    optimizer.groups = ml_collections.ConfigDict()

    config.schedule = schedule = ml_collections.ConfigDict()
    schedule.name = "plateau"  # plateau | constant | warmup_cosine
    schedule.learning_rate = 5e-3
    schedule.plateau_factor = 0.3
    schedule.plateau_patience = 5
    schedule.max_reductions = 4  # early stopping after this many reductions without progress
    # "simple": reduce after `plateau_patience` bad evaluations, stop at the first plateau after
    # `max_reductions`; "reference": the SENSORIUM 2023 trainer (restore after `plateau_patience`
    # bad evaluations, stop at the `max_reductions`-th; the rate drops one evaluation later).
    schedule.plateau_rule = "simple"
    schedule.plateau_threshold = 1e-6  # an improvement is a score above the best by more than this
    schedule.min_learning_rate = 0.0  # the plateau schedule's floor
    schedule.restore_best = False  # at each plateau, continue from the best parameters
    schedule.warmup_steps = 0
    schedule.end_learning_rate = 0.0
    # warmup_flat_cosine: the warm-up starts at this fraction of the rate, which is held until
    # `flat_fraction` of the steps, then decays along a cosine to end_learning_rate.
    schedule.warmup_start_factor = 0.0
    schedule.flat_fraction = 0.0

    config.train = train = ml_collections.ConfigDict()
    train.steps = 2000
    train.eval_every = 100  # steps between validations ("epochs" for the plateau schedule)
    # In epochs of the training clips instead (0: use the step counts above); resolved to steps
    # once the store is open (one epoch: the steps that draw each mouse's training trials once).
    train.max_epochs = 0
    train.eval_every_epochs = 0
    train.log_every = 10
    train.loss = "poisson"
    # Keyword options of the loss, as data (e.g. {"weight": 1.32} for poisson_correlation).
    train.loss_options = ml_collections.ConfigDict()
    # "mean": the loss averaged over valid entries; "reference": the SENSORIUM 2023 trainer's
    # sum over entries, each mouse's clips times sqrt(its trials / its clips in the batch)
    # (see models/losses.py LossScale). The model's penalty is scaled alike in both.
    train.loss_scale = "mean"
    train.burn_in = BURN_IN_FRAMES  # frames dropped from each trial before scoring
    # The evaluator (sensorium_jax.evaluation.evaluators) whose primary score validation reports and
    # the plateau schedule and the best checkpoint follow.
    train.validation_metric = "single_trial"
    # Exponential moving average of the parameters (0: none); validation, the best checkpoint's
    # users and `load` then predict with the average.
    train.ema_decay = 0.0
    # CutMix of clips of the same mouse inside the step (probability 0: off).
    train.cutmix = ml_collections.ConfigDict({"probability": 0.0, "alpha": 1.0})
    # Distillation (sensorium_jax.training.distillation): a trained run's workdir whose predictions
    # train every other mouse's readout on each clip, making `ratio` of the loss's weight.
    train.distill = ml_collections.ConfigDict({"teacher": "", "ratio": 0.36})
    return config


REPO_ROOT = Path(__file__).resolve().parents[1]  # where configs/ lives in a source checkout


def import_config(path: str | Path) -> ModuleType:
    """The config file at `path` as a module (not registered in sys.modules).

    Configs reuse each other through this one helper instead of `runpy` or `sys.path` edits.
    A relative path is taken from the repository root (`configs/smoke.py`), not from the
    current folder, so a config finds its siblings from wherever the command runs.
    """
    path = Path(path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    spec = importlib.util.spec_from_file_location(f"sensorium_jax_config_{path.stem}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(f"{path}: no config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path: str | Path, variant: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(variant)` of the config file at `path` (`get_config()` when no variant),
    as `--config path:variant` gives it on the command line."""
    get_config = import_config(path).get_config
    return get_config() if variant is None else get_config(variant)
