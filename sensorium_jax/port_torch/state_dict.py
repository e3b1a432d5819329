"""Reading a PyTorch state dict safely, checking its keys and shapes, converting layouts.

The file is read with `torch.load(weights_only=True)`: only tensors and plain containers are
unpickled, never code, so an untrusted checkpoint cannot run anything. Every key the mapping
reads is checked against the shape our model implies; a key the mapping never reads is an
error too, so a state dict of another architecture cannot import half-way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

import numpy as np
from flax import nnx

from sensorium_jax.errors import InputDataError

# Wrappers some trainers save around the state dict (argus: "nn_state_dict").
WRAPPER_KEYS = ("state_dict", "nn_state_dict", "model_state_dict")


def _torch() -> ModuleType:
    """torch, imported only here: training, evaluation and inference never need it."""
    try:
        import torch
    except ModuleNotFoundError:
        raise InputDataError("torch", "import", "PyTorch to read .pt files (pip install 'sensorium_jax[torch]')",
                             "not installed") from None
    return torch


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a `.pt` file as float32/int NumPy arrays by key, read without executing code."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "state dict", "a PyTorch .pt file", "no such file")
    try:
        raw = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - any refusal of the safe reader is the user's file
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise InputDataError(path, "state dict", "a state dict readable with torch.load(weights_only=True)",
                             first) from None
    return _tensors(_unwrap(raw, path), path)


def _unwrap(raw: object, path: Path) -> Mapping:
    if not isinstance(raw, Mapping):
        raise InputDataError(path, "state dict", "a mapping of parameter names to tensors", type(raw).__name__)
    for key in WRAPPER_KEYS:
        if isinstance(raw.get(key), Mapping):
            return raw[key]
    return raw


def _tensors(raw: Mapping, path: Path) -> dict[str, np.ndarray]:
    torch = _torch()
    out = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            raise InputDataError(path, str(key), "a tensor", type(value).__name__)
        value = value.detach().cpu()
        out[str(key)] = value.float().numpy() if value.is_floating_point() else value.numpy()
    return out


class StateDict:
    """Keys handed out one by one with their shape checked; `finish` refuses keys left over."""

    def __init__(self, tensors: Mapping[str, np.ndarray], source: str | Path):
        self.tensors = dict(tensors)
        self.source = str(source)
        self.used: set[str] = set()

    def keys_under(self, prefix: str) -> list[str]:
        """Keys starting with `prefix` (a mouse's entries, a regulariser's buffers)."""
        return [k for k in self.tensors if k.startswith(prefix)]

    def take(self, key: str, shape: Iterable[int]) -> np.ndarray:
        """The tensor `key`, which must have `shape` (one-line error naming the key otherwise)."""
        shape = tuple(int(s) for s in shape)
        if key not in self.tensors:
            raise InputDataError(self.source, key, f"a tensor of shape {shape} (the model's config needs it)",
                                 "missing")
        value = self.tensors[key]
        if tuple(value.shape) != shape:
            raise InputDataError(self.source, key, f"shape {shape} (from the model's config and the store)",
                                 f"shape {tuple(value.shape)}")
        self.used.add(key)
        return value

    def skip(self, key: str, shape: Iterable[int] | None = None) -> None:
        """Marks a key the reference saves but prediction does not use (BatchNorm counters,
        regulariser filters) as read, after checking it is there (with `shape`, if given)."""
        if shape is not None:
            self.take(key, shape)
        elif key not in self.tensors:
            raise InputDataError(self.source, key, "a tensor (the reference model saves it)", "missing")
        self.used.add(key)

    def finish(self) -> None:
        """Refuses keys the mapping never read: another architecture, or mice or layers too many."""
        left = sorted(set(self.tensors) - self.used)
        if left:
            more = f" (and {len(left) - 1} more)" if len(left) > 1 else ""
            raise InputDataError(self.source, left[0], "only keys of the configured model",
                                 f"an unknown key{more}")


# --------------------------------------------------------------------------- layouts


def conv3d_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Conv3d weight [O, I, D, H, W] -> DHWIO."""
    return np.transpose(weight, (2, 3, 4, 1, 0))


def conv3d_shape(dhwio: tuple[int, ...]) -> tuple[int, ...]:
    """The torch Conv3d weight shape [O, I, D, H, W] of a DHWIO kernel shape."""
    d, h, w, i, o = dhwio
    return (o, i, d, h, w)


def conv2d_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Conv2d weight [O, I, H, W] -> HWIO."""
    return np.transpose(weight, (2, 3, 1, 0))


def conv2d_shape(hwio: tuple[int, ...]) -> tuple[int, ...]:
    h, w, i, o = hwio
    return (o, i, h, w)


def linear_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Linear weight [O, I] -> [I, O]."""
    return np.ascontiguousarray(weight.T)


def batch_norm_stats(sd: StateDict, prefix: str, channels: int) -> dict[str, np.ndarray]:
    """A torch BatchNorm's scale, bias, running mean and variance (its batch counter is read
    and dropped: evaluation does not use it)."""
    out = {name: sd.take(f"{prefix}.{key}", (channels,))
           for name, key in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var"))}
    sd.skip(f"{prefix}.num_batches_tracked", ())
    return out


# --------------------------------------------------------------------------- writing into the model


def assign(variable: nnx.Variable, value: np.ndarray, rows: tuple | None = None) -> None:
    """Writes `value` into an nnx Variable (all of it, or the index `rows` of it).

    The update is made in NumPy: a JAX `.at[].set` per parameter would compile one program per
    shape. The torch shape was checked against the shape this variable implies, so a mismatch
    here is a mapping bug, not the user's input.
    """
    import jax.numpy as jnp

    current = np.array(variable[...])
    target = current if rows is None else current[rows]
    if tuple(target.shape) != tuple(np.shape(value)):
        raise AssertionError(f"mapping bug: {np.shape(value)} into {tuple(target.shape)}")
    if rows is None:
        current = np.asarray(value, current.dtype)
    else:
        current[rows] = value
    variable[...] = jnp.asarray(current)


def assign_batch_norm(norm: nnx.BatchNorm, stats: Mapping[str, np.ndarray],
                      mean_offset: np.ndarray | float = 0.0) -> None:
    """Copies torch BatchNorm statistics into an `nnx.BatchNorm`; `mean_offset` is a bias that
    came before the normalisation (a convolution's), folded into the running mean: in
    evaluation (x + b - mean) equals (x - (mean - b))."""
    assign(norm.scale, stats["scale"])
    assign(norm.bias, stats["bias"])
    assign(norm.mean, stats["mean"] - mean_offset)
    assign(norm.var, stats["var"])
