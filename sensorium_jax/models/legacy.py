"""Model configs saved by earlier versions, brought up to today's options before building.

Checkpoints keep the config they were trained with, so a run from before the `model.kernels`
option (when each model named its own backend choice) or from before a key existed must still
load and resume. Only the names change: parameters and the forward pass are the same.

Keys added since a config was saved take today's defaults, except those whose default changed
what training does (`_EARLIER_BEHAVIOUR`): a config without them gets the value that reproduces
how it was trained, so a resumed run keeps its objective and a rebuilt one its initialisation.
Keys the config has (e.g. an old `bn_momentum` of 0.9) are always kept.
"""

from __future__ import annotations

import ml_collections

# (section, old key) -> {old value: `kernels` value}; the section is None for top-level keys.
_LEGACY_KERNELS: dict[tuple[str | None, str], dict[str, str]] = {
    ("core", "conv_impl"): {"auto": "auto", "3d": "native", "folded2d": "folded", "matmul": "matmul"},
    ("gru", "recurrent_conv"): {"auto": "auto", "native": "native", "patches": "folded"},
    ("blocks", "depthwise_impl"): {"auto": "auto", "native": "native", "shifts": "folded"},
    (None, "member_loop"): {"auto": "auto", "vmap": "native", "unroll": "folded", "map": "folded"},
}


# model name -> (section, key) -> the behaviour of configs saved before the key existed.
_EARLIER_BEHAVIOUR: dict[str, dict[tuple[str, str], object]] = {
    "factorized": {
        ("core", "conv_init"): "lecun_normal",
        ("core", "gamma_input_spatial"): 0.0,
        ("core", "gamma_input_temporal"): 0.0,
    },
    "gru": {("core", "type"): "plain"},  # the core before the rotation-equivariant one
    # blocks in their own width and plain shortcuts, before the reference's layout
    "dwiseneuro": {("blocks", "layout"): "own", ("blocks", "shortcut_norm"): False},
}


def upgrade(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with legacy backend options folded into `kernels` and every key of
    the model's `defaults` that it lacks filled in (keys it has are kept as they are)."""
    upgraded = ml_collections.ConfigDict(config.to_dict())
    for (section, key), values in _LEGACY_KERNELS.items():
        parent = upgraded if section is None else upgraded.get(section)
        if parent is None or key not in parent:
            continue
        old = parent[key]
        with parent.unlocked():
            del parent[key]
        if "kernels" not in upgraded and old in values:
            upgraded.kernels = values[old]
    _fill_earlier_behaviour(upgraded)
    return _fill(upgraded, defaults)


def _fill_earlier_behaviour(config: ml_collections.ConfigDict) -> None:
    """Missing keys of `_EARLIER_BEHAVIOUR` set to how configs without them trained."""
    for (section, key), value in _EARLIER_BEHAVIOUR.get(config.get("name"), {}).items():
        parent = config.get(section)
        if parent is not None and key not in parent:
            with parent.unlocked():
                parent[key] = value


def _fill(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    with config.unlocked():
        for key, value in defaults.items():
            if key not in config:
                config[key] = value
            elif isinstance(value, ml_collections.ConfigDict) and isinstance(config[key], ml_collections.ConfigDict):
                if "name" in value and config[key].get("name") != value.name:
                    continue  # another model's config (an ensemble's member): upgraded when it is built
                _fill(config[key], value)
    return config
