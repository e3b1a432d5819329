"""`--sweep key=v1,v2,...`: one config key, several values, one training measurement each."""

from __future__ import annotations

import copy
import dataclasses

import ml_collections

from sensorium_jax.errors import InputDataError


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str  # as given on the command line
    key: str  # the dotted config key it sets
    values: tuple


def resolve_key(config: ml_collections.ConfigDict, name: str) -> str:
    """The dotted config key of `name`; `batch_size` is the global batch's knob: clips per
    mouse when every batch holds every mouse, else data.batch_size."""
    if name == "batch_size" and not _has_key(config, name):
        return "data.batch_size" if config.data.mouse_sampling == "uniform" else "data.clips_per_mouse"
    if not _has_key(config, name):
        raise InputDataError("--sweep", name, "an existing config key (dotted, e.g. data.clips_per_mouse)", name)
    return name


def parse_sweep(spec: str, config: ml_collections.ConfigDict) -> Sweep:
    """'data.clips_per_mouse=2,4,8' -> Sweep, each value converted to the key's current type."""
    name, sep, raw = spec.partition("=")
    name = name.strip()
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not sep or not name or not items:
        raise InputDataError("--sweep", "spec", "key=v1,v2,... (e.g. batch_size=8,16,32)", spec)
    key = resolve_key(config, name)
    current = get_key(config, key)
    return Sweep(name, key, tuple(_convert(item, current, key) for item in items))


def with_value(config: ml_collections.ConfigDict, key: str, value) -> ml_collections.ConfigDict:
    """A copy of `config` with `key` set; the original (possibly locked) config is untouched."""
    updated = copy.deepcopy(config)
    *parents, leaf = key.split(".")
    node = updated
    for part in parents:
        node = node[part]
    node[leaf] = value
    return updated


def get_key(config: ml_collections.ConfigDict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _has_key(config: ml_collections.ConfigDict, key: str) -> bool:
    try:
        get_key(config, key)
    except (KeyError, AttributeError, TypeError):
        return False
    return True


def _convert(item: str, current, key: str):
    kind = type(current)
    try:
        if kind is bool:
            if item.lower() not in ("true", "false", "1", "0"):
                raise ValueError(item)
            return item.lower() in ("true", "1")
        if kind in (int, float, str):
            return kind(item)
    except ValueError:
        raise InputDataError("--sweep", key, f"values of type {kind.__name__}", item) from None
    raise InputDataError("--sweep", key, "a number, string or bool config value", f"{kind.__name__} {current!r}")
