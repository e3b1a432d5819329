"""From per-layer, per-neuron scores to per-site numbers and the layer each area commits to."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def max_over_layers(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best score per neuron over layers ([L, N] -> [N]) and the index of that layer."""
    scores = np.asarray(scores)
    best = np.nanargmax(np.where(np.isnan(scores), -np.inf, scores), axis=0)
    return scores[best, np.arange(scores.shape[1])], best


def site_means(values: np.ndarray, sites: Sequence[Any], keep: np.ndarray | None = None) -> dict[Any, float]:
    """Mean of per-neuron values per site label (over kept, finite neurons; NaN if none)."""
    values = np.asarray(values, np.float64)
    sites = np.asarray(sites)
    keep = np.ones(values.shape, bool) if keep is None else np.asarray(keep, bool)
    out = {}
    for site in dict.fromkeys(sites.tolist()):
        sel = (sites == site) & keep & np.isfinite(values)
        out[site] = float(values[sel].mean()) if sel.any() else float("nan")
    return out


def relative_depth(index: int, n_layers: int) -> float:
    """0 for the first scored layer, 1 for the last."""
    return float(index) / max(n_layers - 1, 1)


def layer_commitment(
    scores: np.ndarray, layers: Sequence[str], areas: Sequence[Any], keep: np.ndarray | None = None
) -> dict[Any, dict[str, Any]]:
    """Per area: the layer with the highest mean score over the area's kept neurons."""
    scores = np.asarray(scores, np.float64)
    out = {}
    for area in dict.fromkeys(np.asarray(areas).tolist()):
        per_layer = [site_means(s, areas, keep)[area] for s in scores]
        arr = np.asarray(per_layer)
        if not np.isfinite(arr).any():
            continue
        best = int(np.nanargmax(arr))
        out[area] = {
            "layer": layers[best],
            "index": best,
            "relative_depth": relative_depth(best, len(layers)),
            "score": float(arr[best]),
            "per_layer": {name: float(v) for name, v in zip(layers, per_layer)},
        }
    return out
