"""Models by name, found by import as big_vision does: no registration step.

`config.name = "factorized"` names the module `sensorium_jax.models.factorized`; a dotted name
(`"my_pkg.my_model"`) names that module; a plain name that is not a built-in module is imported
as it stands (`"toy_model"`, from anywhere on the import path). A model module defines

    default_config() -> ml_collections.ConfigDict
    Model  # a `base.Model` subclass (or an alias of one), built as Model(config, card, rngs=rngs)

`build_model` resolves the config's `kernels` option once (see `kernels.resolve`) and hands the
model a copy with the resolved value; `default_model_config` gives a fresh copy of a model's
defaults (configs start from it).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import pkgutil
from types import ModuleType

import jax
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import base, kernels, legacy

PACKAGE = "sensorium_jax.models"


def module_name(name: str) -> str:
    """The module that defines model `name`."""
    if "." in name:
        return name
    builtin = f"{PACKAGE}.{name}"
    return builtin if importlib.util.find_spec(builtin) is not None else name


def model_module(name: str) -> ModuleType:
    """The imported module of model `name`; KeyError (listing the built-in models) when there
    is none, TypeError when it does not define `default_config` and `Model`."""
    target = module_name(name)
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as error:
        if error.name is None or not target.startswith(error.name):
            raise  # the model's module exists but imports something missing
        raise KeyError(f"unknown model {name!r} (no module {target!r}); "
                       f"built-in: {', '.join(registered_models())}") from None
    if not defines_model(module):
        raise TypeError(f"module {target!r} is not a model: it needs `default_config()` and a `Model` class")
    return module


def defines_model(module: ModuleType) -> bool:
    """Whether `module` is a model module: a `default_config` function and a `Model` class."""
    return callable(getattr(module, "default_config", None)) and isinstance(getattr(module, "Model", None), type)


def registered_models() -> tuple[str, ...]:
    """The built-in model names: the modules of this package that define a model."""
    package = importlib.import_module(PACKAGE)
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        if defines_model(module):
            names.append(info.name)
    return tuple(sorted(names))


def default_model_config(name: str) -> ml_collections.ConfigDict:
    """A fresh copy of the default configuration of model `name` (its `name` field set)."""
    config = model_module(name).default_config()
    config.name = name
    return config


def build_model(model_config: ml_collections.ConfigDict, card: DatasetCard, rngs: nnx.Rngs) -> base.Model:
    """The model `model_config.name` for the mice of `card`, its `kernels` option resolved."""
    name = model_config.name
    module = model_module(name)
    model_config = legacy.upgrade(model_config, module.default_config())
    if "kernels" in model_config:
        model_config.kernels = kernels.resolve(model_config.kernels)
    model = module.Model(model_config, card, rngs=rngs)
    if not isinstance(model, base.Model):
        raise TypeError(f"model {name!r} built a {type(model).__name__}, not a sensorium_jax.models.base.Model: "
                        "subclass it and implement its contract")
    return model


def count_parameters(model: nnx.Module) -> int:
    """Number of trainable scalars (`nnx.Param` entries) of `model`; works on an abstract model
    from `nnx.eval_shape` too (nothing is allocated)."""
    return sum(int(math.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
