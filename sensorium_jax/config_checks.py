"""Checks of a whole experiment config before any work, one line per problem.

A wrong value used to surface late (a ZeroDivisionError after compiling, a traceback after the
first validation) or never (a negative learning rate trains to nonsense and exits 0). Every
check here is a pure function `config -> list of problems`; the allowed values are read from the
code that uses them (losses, schedules, evaluators, data kinds, kernels, the model registry),
so a new loss or tier is allowed without touching this file. `validate_config` and
`config_flags_parser` are the only edges: they raise `ConfigError` (exit status 2) or exit.
"""

from __future__ import annotations

import math
import sys
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from sensorium_jax.errors import INPUT_ERROR_EXIT, InputDataError

Problems = list[str]


class ConfigError(InputDataError):
    """Several config problems at once; `str()` is one line per problem under a header."""

    def __init__(self, problems: Sequence[str], path: str = "config"):
        self.problems = list(problems)
        self.path, self.field, self.expected, self.found = path, "config", "valid values", None
        count = len(self.problems)
        header = f"{path}: {count} problem{'s' if count != 1 else ''} (nothing was started or written)"
        ValueError.__init__(self, "\n".join([header, *(f"  {p}" for p in self.problems)]))


# --------------------------------------------------------------------------- helpers


_ABSENT = object()


def _missing(config: Any, key: str) -> bool:
    return _get(config, key, _ABSENT) is _ABSENT


def _get(config: Any, key: str, default: Any = None) -> Any:
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return default
        node = node[part]
    return node


def _problem(key: str, value: Any, expected: str) -> str:
    return f"{key} = {value!r}: expected {expected}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(config: Any, keys: Iterable[str], minimum: int) -> Problems:
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    return [_problem(k, _get(config, k), what) for k in keys
            if not _missing(config, k) and not (_is_int(_get(config, k)) and _get(config, k) >= minimum)]


def _number_in(config: Any, key: str, test: Callable[[float], bool], what: str) -> Problems:
    if _missing(config, key):
        return []
    value = _get(config, key)
    return [] if _is_number(value) and test(value) else [_problem(key, value, what)]


def _one_of(config: Any, key: str, allowed: Sequence[str]) -> Problems:
    if _missing(config, key):
        return []
    value = _get(config, key)
    return [] if value in allowed else [_problem(key, value, "one of " + ", ".join(map(repr, allowed)))]


# --------------------------------------------------------------------------- the checks


def data_problems(config: ml_collections.ConfigDict) -> Problems:
    """`config.data`: sizes, sampling, normalization mode, the synthetic preset and the tiers."""
    from sensorium_jax.data.kinds import KINDS, UNSCORED_TIERS
    from sensorium_jax.data.normalization import MODES
    from sensorium_jax.data.sampling import MOUSE_SAMPLING
    from sensorium_jax.data.datasets import SYNTHETIC_KINDS
    from sensorium_jax.data.synthetic.presets import PRESETS

    problems = _int_at_least(config, ["data.clip_length", "data.clips_per_mouse", "data.eval_batch_size",
                                      "data.read_threads"], 1)
    problems += _int_at_least(config, ["data.batch_size", "data.prefetch", "data.device_prefetch",
                                       "data.synthetic_seed", "data.synthetic_mice"], 0)
    problems += _one_of(config, "data.mouse_sampling", MOUSE_SAMPLING)
    problems += _one_of(config, "data.normalization", MODES)
    if _get(config, "data.mouse_sampling") == "uniform" and _get(config, "data.batch_size") == 0:
        problems.append(_problem("data.batch_size", 0, "a positive number of clips with data.mouse_sampling='uniform'"))
    store = _get(config, "data.store", "")
    if store:
        if not Path(store).is_dir():
            problems.append(_problem("data.store", store, "an existing store folder (or empty: synthetic data)"))
    else:
        problems += _one_of(config, "data.synthetic_preset", tuple(PRESETS))
        problems += _one_of(config, "data.synthetic_kind", SYNTHETIC_KINDS)
    all_tiers = tuple(dict.fromkeys(t for kind in KINDS.values() for t in kind.tiers))
    scored = tuple(t for t in all_tiers if t not in UNSCORED_TIERS)
    problems += _one_of(config, "data.validation_tier", scored)
    train_tiers = _get(config, "data.train_tiers", ("train",))
    if isinstance(train_tiers, str) or not train_tiers or any(t not in all_tiers for t in train_tiers):
        problems.append(_problem("data.train_tiers", train_tiers,
                                 "a non-empty list of tiers from " + ", ".join(map(repr, all_tiers))))
    return problems + fold_problems(config, all_tiers)


def fold_problems(config: ml_collections.ConfigDict, all_tiers: Sequence[str]) -> Problems:
    """`data.fold` in -1 .. n_folds - 1 (with at least 2 folds) and stored tiers to split."""
    fold, n_folds = _get(config, "data.fold", -1), _get(config, "data.n_folds", 7)
    if not _is_int(n_folds) or n_folds < 2:
        return [_problem("data.n_folds", n_folds, "an integer >= 2")]
    if not _is_int(fold) or not -1 <= fold < n_folds:
        return [_problem("data.fold", fold, f"-1 (the tiers as stored) or a fold in 0..{n_folds - 1}")]
    labelled = _get(config, "data.fold_tiers", ("train", "oracle"))
    if isinstance(labelled, str) or not labelled or any(t not in all_tiers for t in labelled):
        return [_problem("data.fold_tiers", labelled, "a non-empty list of tiers from " + ", ".join(map(repr, all_tiers)))]
    return []


def model_problems(config: ml_collections.ConfigDict) -> Problems:
    """`config.model`: a name the registry resolves and a `kernels` value of `models.kernels`."""
    from sensorium_jax.models import kernels, registry

    name = _get(config, "model.name")
    if not isinstance(name, str) or not name:
        return [_problem("model.name", name, "a model name, one of " + ", ".join(registry.registered_models())
                         + " or an importable module")]
    problems: Problems = []
    try:
        registry.model_module(name)
    except (KeyError, TypeError, ImportError) as error:
        problems.append(f"model.name = {name!r}: {str(error).strip(chr(34) + chr(39))}")
    problems += _one_of(config, "model.kernels", typing.get_args(kernels.Kernels))
    return problems


def optimization_problems(config: ml_collections.ConfigDict) -> Problems:
    """`optimizer`, `schedule`, `train.loss`, `train.ema_decay`, the epoch counts: names the code
    knows, sane numbers."""
    import optax

    from sensorium_jax.models.losses import LOSSES, loss_option_names
    from sensorium_jax.training.schedules import PLATEAU_RULES, learning_rate_schedule, make_optimizer

    problems = _number_in(config, "schedule.learning_rate", lambda v: v > 0, "a number > 0")
    problems += _number_in(config, "schedule.end_learning_rate", lambda v: v >= 0, "a number >= 0")
    problems += _number_in(config, "schedule.plateau_factor", lambda v: 0 < v <= 1, "a number in (0, 1]")
    problems += _int_at_least(config, ["schedule.plateau_patience", "schedule.max_reductions",
                                       "schedule.warmup_steps", "train.max_epochs", "train.eval_every_epochs"], 0)
    problems += _one_of(config, "schedule.plateau_rule", PLATEAU_RULES)
    problems += _number_in(config, "schedule.plateau_threshold", lambda v: v >= 0, "a number >= 0")
    problems += _number_in(config, "schedule.min_learning_rate", lambda v: v >= 0, "a number >= 0 (0: no floor)")
    problems += _number_in(config, "schedule.warmup_start_factor", lambda v: 0 <= v <= 1, "a number in [0, 1]")
    problems += _number_in(config, "schedule.flat_fraction", lambda v: 0 <= v < 1, "a number in [0, 1)")
    if _get(config, "schedule.plateau_rule") == "reference" and _get(config, "schedule.plateau_patience") == 0:
        problems.append(_problem("schedule.plateau_patience", 0, "at least 1 with schedule.plateau_rule='reference'"))
    problems += _number_in(config, "optimizer.weight_decay", lambda v: v >= 0, "a number >= 0")
    problems += _number_in(config, "optimizer.grad_clip_norm", lambda v: v >= 0, "a number >= 0 (0: no clipping)")
    problems += _number_in(config, "train.ema_decay", lambda v: 0 <= v < 1, "a number with 0 <= ema_decay < 1")
    problems += _one_of(config, "train.loss", tuple(sorted(LOSSES)))
    if _get(config, "train.loss") in LOSSES:
        known = loss_option_names(_get(config, "train.loss"))
        for option in _get(config, "train.loss_options", {}) or {}:
            if option not in known:
                problems.append(_problem(f"train.loss_options.{option}", _get(config, f"train.loss_options.{option}"),
                                         f"an option of loss {_get(config, 'train.loss')!r}: "
                                         + (", ".join(known) or "it takes none")))
    # The schedule and optimizer factories are the only lists of their names: ask them, with
    # safe numbers, so that a bad number above does not hide a bad name.
    probe_schedule = ml_collections.ConfigDict({"name": _get(config, "schedule.name"), "learning_rate": 1.0,
                                                "warmup_steps": 0, "end_learning_rate": 0.0,
                                                "warmup_start_factor": 0.0, "flat_fraction": 0.0})
    probe_optimizer = ml_collections.ConfigDict({"name": _get(config, "optimizer.name"), "weight_decay": 0.0,
                                                 "grad_clip_norm": 0.0})
    for key, build in (
        ("schedule.name", lambda: learning_rate_schedule(probe_schedule, 1)),
        ("optimizer.name", lambda: make_optimizer(probe_optimizer, optax.constant_schedule(1.0))),
    ):
        if _missing(config, key):
            continue
        try:
            build()
        except ValueError as error:
            problems.append(f"{key} = {_get(config, key)!r}: {error}")
    return problems


def train_problems(config: ml_collections.ConfigDict) -> Problems:
    """`config.train`: positive step counts, the validation metric, the loss scale and CutMix."""
    from sensorium_jax.evaluation.evaluators import evaluator_names
    from sensorium_jax.models.losses import LOSS_SCALES

    problems = _int_at_least(config, ["train.steps", "train.eval_every", "train.log_every"], 1)
    problems += _int_at_least(config, ["train.burn_in", "seed"], 0)
    problems += _one_of(config, "train.validation_metric", evaluator_names())
    problems += _one_of(config, "train.loss_scale", LOSS_SCALES)
    problems += _number_in(config, "train.cutmix.probability", lambda v: 0 <= v <= 1, "a number in [0, 1]")
    if _get(config, "train.cutmix.probability"):
        problems += _number_in(config, "train.cutmix.alpha", lambda v: v > 0, "a number > 0")
    if _get(config, "train.distill.teacher"):
        problems += _number_in(config, "train.distill.ratio", lambda v: 0 < v < 1, "a number in (0, 1)")
        if _get(config, "model.name") == "ensemble":
            problems.append(_problem("train.distill.teacher", _get(config, "train.distill.teacher"),
                                     "empty for an ensemble (distill its members' runs one by one)"))
    return problems


def synthetic_mice(config: ml_collections.ConfigDict) -> int | None:
    """The number of mice the synthetic data will have, known before it is generated (None: a store)."""
    from sensorium_jax.data.synthetic.presets import PRESETS

    if _get(config, "data.store"):
        return None
    preset = PRESETS.get(_get(config, "data.synthetic_preset"))
    mice = _get(config, "data.synthetic_mice", 0)
    return mice or (preset.mice if preset is not None else None)


def global_batch_problems(config: ml_collections.ConfigDict, n_mice: int | None, devices: int,
                          processes: int = 1) -> Problems:
    """The global batch must split evenly over the devices and processes (known before any step)."""
    uniform = _get(config, "data.mouse_sampling") == "uniform"
    key = "data.batch_size" if uniform else "data.clips_per_mouse"
    per = _get(config, key)
    if not _is_int(per) or per < 1 or (not uniform and n_mice is None):
        return []
    size = per if uniform else per * n_mice
    divisor = math.lcm(devices, processes)
    if size % divisor == 0:
        return []
    how = f"{per}" if uniform else f"{per} clips x {n_mice} mice = {size}"
    return [f"{key} = {per!r}: the global batch ({how}) must be a multiple of the {devices} devices"
            + (f" and {processes} processes" if processes > 1 else "")]


def config_problems(config: ml_collections.ConfigDict, devices: int = 1, processes: int = 1) -> Problems:
    """Every problem of `config`, in section order (empty: fine)."""
    problems = (data_problems(config) + model_problems(config) + optimization_problems(config)
                + train_problems(config))
    return problems + global_batch_problems(config, synthetic_mice(config), devices, processes)


def validate_config(config: ml_collections.ConfigDict, devices: int | None = None,
                    processes: int | None = None) -> None:
    """Raises `ConfigError` listing every problem of `config` (devices: JAX's, unless given)."""
    if devices is None or processes is None:
        import jax

        devices = jax.device_count() if devices is None else devices
        processes = jax.process_count() if processes is None else processes
    problems = config_problems(config, devices, processes)
    if problems:
        raise ConfigError(problems)


# --------------------------------------------------------------------------- resuming


# Keys whose change makes a workdir's checkpoints unusable: they change the model, the data it
# was trained on (and its mice), or the shape of the optimizer state.
INCOMPATIBLE_PREFIXES = ("model.", "data.store", "data.synthetic_preset", "data.synthetic_seed",
                         "data.synthetic_mice", "data.synthetic_kind", "optimizer.name", "optimizer.groups")
# Keys that change the optimizer state's structure only when switched on or off.
ON_OFF_KEYS = ("optimizer.grad_clip_norm", "train.ema_decay")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; tuples become lists, as in the saved JSON."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def resume_problems(saved: Mapping[str, Any], new: Mapping[str, Any]) -> Problems:
    """Changes from the workdir's saved config to `new` that its checkpoints cannot follow.

    `train.steps`, `eval_every`, logging or the learning rate may change between runs; the model,
    the data and the optimizer's structure may not. Both are plain dicts (JSON of the configs).
    """
    old_flat, new_flat = flatten(saved), flatten(new)
    problems = []
    for key in sorted(set(old_flat) | set(new_flat)):
        old, value = old_flat.get(key, "<absent>"), new_flat.get(key, "<absent>")
        if old == value:
            continue
        if any(key == p.rstrip(".") or key.startswith(p) for p in INCOMPATIBLE_PREFIXES):
            problems.append(f"{key}: was {old!r} in the workdir's config, now {value!r}")
        elif key in ON_OFF_KEYS and bool(old if old != "<absent>" else 0) != bool(value if value != "<absent>" else 0):
            problems.append(f"{key}: was {old!r} in the workdir's config, now {value!r} (switches it on or off)")
    return problems


# --------------------------------------------------------------------------- the command line


def override_keys(argv: Sequence[str], flag: str = "config") -> list[str]:
    """The `a.b` of every `--config.a.b[=value]` in `argv`."""
    keys = []
    for arg in argv:
        if arg.startswith(f"--{flag}."):
            keys.append(arg[len(flag) + 3:].split("=", 1)[0])
    return keys


def config_file_argument(argv: Sequence[str], default: str, flag: str = "config") -> str:
    """The `path[:variant]` given with `--config` (or `default`)."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{flag}="):
            return arg.split("=", 1)[1]
        if arg == f"--{flag}" and i + 1 < len(argv):
            return argv[i + 1]
    return default


def unknown_key_problems(config: ml_collections.ConfigDict, keys: Iterable[str]) -> Problems:
    """Overrides naming no field of `config`, with the fields that section has."""
    problems = []
    for key in keys:
        if _missing(config, key):
            section, _, _ = key.rpartition(".")
            node = _get(config, section) if section else config
            known = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else f"{section} has no fields"
            problems.append(f"--config.{key}: no such config key; {section or 'the config'} has: {known}")
    return problems


def config_flags_parser(default_config: str, flag: str = "config") -> Callable[[list[str]], list[str]]:
    """An absl `flags_parser` that turns a `--config.<unknown key>` into one line and exit status 2.

    ml_collections raises an AttributeError naming only the last part of the key, with a
    traceback; this finds the keys the config file does not define and names them.
    """
    from absl import app

    def parse(argv: list[str]) -> list[str]:
        try:
            return app.parse_flags_with_usage(argv)
        except (AttributeError, KeyError) as error:
            from sensorium_jax.config import load_config

            spec = config_file_argument(argv, default_config, flag)
            path, _, variant = spec.partition(":")
            path = str(Path(path).absolute()) if Path(path).exists() else path
            try:
                config = load_config(path, variant or None)
            except Exception:  # the file itself is broken: keep ml_collections' own report
                raise error from None
            problems = unknown_key_problems(config, override_keys(argv, flag))
            if not problems:
                raise
            print("error: " + str(ConfigError(problems, path=spec)), file=sys.stderr)
            raise SystemExit(INPUT_ERROR_EXIT) from None

    return parse
