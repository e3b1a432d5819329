"""Run a feature model over a stimulus set, keeping per layer only what the atlas needs.

Per layer that is its sparse random projection [n, k] (accumulated batch by batch: a
projection is linear, so the full layer never has to fit in memory) and, for RSA, the full
flattened features when they fit a byte budget (else RSA falls back to the projection).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from sensorium_jax.atlas import projection as proj_lib
from sensorium_jax.atlas import srp
from sensorium_jax.atlas.models import FeatureModel


@dataclasses.dataclass
class LayerFeatures:
    projected: np.ndarray  # [n, k]
    full: np.ndarray | None  # [n, bucket(d)] zero-padded, or None when over budget
    n_features: int

    @property
    def mask(self) -> np.ndarray | None:
        """The real (unpadded) columns of `full`."""
        return None if self.full is None else np.arange(self.full.shape[1]) < self.n_features


def _flat_means(outputs: dict, layers: Sequence[str], frames: int) -> dict[str, jax.Array]:
    """Flatten per stimulus; clips' frames (folded into the batch) are averaged."""
    out = {}
    for name in layers:
        x = outputs[name].astype(jnp.float32)
        d = int(np.prod(x.shape[1:]))
        x = x.reshape(-1, frames, d).mean(axis=1)
        out[name] = jnp.pad(x, ((0, 0), (0, bucket(d) - d)))
    return out


def bucket(d: int) -> int:
    """Feature axes are zero-padded to a power of two, so layers of similar size share compiles."""
    return 1 << max(5, (d - 1).bit_length())


def extract(
    model: FeatureModel,
    stimuli: np.ndarray,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    n_components: int | None = None,
    eps: float = 0.1,
    batch_size: int = 16,
    full_budget_bytes: int = 1 << 30,  # all layers kept whole for RSA together
    progress: bool = True,
) -> dict[str, LayerFeatures]:
    """Per layer: the projection (drawn per layer from `seed` and its name) and, within budget,
    the full features. stimuli: [n, H, W] or [n, F, H, W] (features averaged over the F frames)."""
    layers = tuple(layers or model.layers)
    unknown = [name for name in layers if name not in model.layers]
    if unknown:
        raise KeyError(f"{model.name} has no layer(s) {unknown}; its layers: {', '.join(model.layers)}")
    n = stimuli.shape[0]
    frames = stimuli.shape[1] if stimuli.ndim == 4 else 1
    k = n_components or proj_lib.jl_min_dim(n, eps)

    @jax.jit
    def forward(params, batch):
        flat = batch.reshape(-1, *batch.shape[-2:])
        return _flat_means(model.features(params, flat), layers, frames)

    projections: dict[str, proj_lib.SparseProjection] = {}
    projected = {name: [] for name in layers}
    full: dict[str, list] = {name: [] for name in layers}
    probe = jax.eval_shape(model.features, model.params, jax.ShapeDtypeStruct((1, *stimuli.shape[-2:]), "float32"))
    dims = {name: int(np.prod(probe[name].shape[1:])) for name in layers}
    # Full layers for RSA, smallest first, while their sum fits the budget.
    full_ok, used = set(), 0
    for name in sorted(layers, key=lambda name: dims[name]):
        if used + n * bucket(dims[name]) * 4 <= full_budget_bytes:
            full_ok.add(name)
            used += n * bucket(dims[name]) * 4
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=f"{model.name} features", disable=not progress, leave=False):
        out = forward(model.params, jnp.asarray(stimuli[start : start + batch_size], jnp.float32))
        for name in layers:
            x, d = out[name], dims[name]
            if name not in projections:
                p = proj_lib.sparse_random_projection(d, k, seed=srp.layer_seed(seed, name))
                projections[name] = proj_lib.SparseProjection(p.rows, p.values, int(x.shape[1]))
            projected[name].append(np.asarray(proj_lib.project(x, projections[name])))
            if name in full_ok:
                full[name].append(np.asarray(x))
    return {
        name: LayerFeatures(
            np.concatenate(projected[name]),
            np.concatenate(full[name]) if name in full_ok else None,
            dims[name],
        )
        for name in layers
    }
