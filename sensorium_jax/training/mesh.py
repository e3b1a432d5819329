"""Device placement: one ('data',) mesh over all devices of all processes.

State is replicated, batches are sharded on their leading axis. Each process contributes
its own slice of the global batch (multi-host), so the same code runs on one CPU, 8 GPUs
or several hosts.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from sensorium_jax.errors import InputDataError

DATA_AXIS = "data"


def make_data_mesh() -> jax.sharding.Mesh:
    """Auto (GSPMD) axis types: models index per-mouse parameters with sharded mouse ids,
    which explicit sharding mode would make every model spell out."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places identical host values on every device of every process."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda leaf: _replicate_leaf(leaf, sharding), tree)


def _replicate_leaf(leaf: Any, sharding: NamedSharding) -> jax.Array:
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        data = _replicate_leaf(jax.random.key_data(leaf), sharding)
        wrap = functools.partial(jax.random.wrap_key_data, impl=jax.random.key_impl(leaf))
        return jax.jit(wrap, out_shardings=sharding)(data)
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def global_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Assembles the global batch from every process's local slice (leading axis)."""
    sharding = batch_sharded(mesh)
    global_size = len(next(iter(local_batch.values()))) * jax.process_count()
    if global_size % mesh.size:
        raise InputDataError("config", "global batch", f"a multiple of the {mesh.size} devices", global_size)
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for key, value in local_batch.items()
    }


def local_slice(global_size: int) -> slice:
    """This process's contiguous share of a global batch of `global_size` examples."""
    count, index = jax.process_count(), jax.process_index()
    if global_size % count:
        raise ValueError(f"global batch {global_size} is not divisible by {count} processes")
    share = global_size // count
    return slice(index * share, (index + 1) * share)


def padded_size(size: int) -> int:
    """Smallest batch size >= size that splits evenly over all devices."""
    devices = jax.device_count()
    return -(-size // devices) * devices
