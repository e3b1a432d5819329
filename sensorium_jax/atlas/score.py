"""The atlas of one model: SRP-ridge and RSA per layer, neuron and site, ceilings, commitment."""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from sensorium_jax.atlas import aggregate, reliability, ridge, rsa, srp
from sensorium_jax.atlas.ceiling import inter_animal_ceiling
from sensorium_jax.atlas.data import AtlasData
from sensorium_jax.atlas.features import LayerFeatures, extract
from sensorium_jax.atlas.models import FeatureModel


def neural_ceilings(data: AtlasData, *, n_splits: int, seed: int, alpha, n_components, threshold: float) -> dict:
    """Per recording: split-half reliability, kept neurons, inter-animal ceiling; per site the RDM reliability."""
    out: dict[str, Any] = {"recordings": {}, "rdm_reliability": {}}
    means = {rec.name: rec.mean for rec in data.recordings}
    inter = inter_animal_ceiling(means, {r.name: r.areas for r in data.recordings}, alpha=alpha,
                                 seed=seed, n_components=n_components)
    for rec in data.recordings:
        if rec.repeats.shape[0] >= 2:
            rel = reliability.split_half_reliability(rec.repeats, n_splits=n_splits, seed=seed)
        else:
            rel = np.full(rec.areas.shape, np.nan, np.float32)
        keep = rel >= threshold if np.isfinite(rel).any() else np.ones(rel.shape, bool)
        out["recordings"][rec.name] = {"reliability": rel, "keep": keep, "inter_animal": inter[rec.name]}
        for area in dict.fromkeys(rec.areas.tolist()):
            sel = (rec.areas == area) & keep
            if rec.repeats.shape[0] >= 2 and sel.sum() >= 2:
                out["rdm_reliability"][f"{rec.name}/{area}"] = reliability.rdm_reliability(
                    rec.repeats, mask=sel, n_splits=n_splits, seed=seed)
    return out


def score(
    model: FeatureModel,
    data: AtlasData,
    *,
    layers: Sequence[str] | None = None,
    alpha: float | Sequence[float] = 1.0,
    seed: int = 0,
    n_components: int | None = None,
    eps: float = 0.1,
    threshold: float = 0.8,
    n_splits: int = 100,
    rsa_method: str = "pearson",
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Everything the atlas reports for one model on one data set, as plain Python/NumPy."""
    layers = tuple(layers or model.layers)
    feats: dict[str, LayerFeatures] = extract(
        model, data.stimuli, layers=layers, seed=seed, n_components=n_components, eps=eps,
        batch_size=batch_size, progress=progress)
    grams = []
    for name in tqdm(layers, desc=f"{model.name} layers", disable=not progress, leave=False):
        grams.append(ridge.centred_gram(ridge.zscore_columns(jnp.asarray(feats[name].projected))))
    grams = jnp.stack(grams)  # [L, n, n]

    ceil = neural_ceilings(data, n_splits=n_splits, seed=seed, alpha=alpha,
                           n_components=n_components, threshold=threshold)
    all_means = np.concatenate([rec.mean for rec in data.recordings], axis=1)
    r_all = np.asarray(ridge.gcv_scores(grams, jnp.asarray(all_means), jnp.asarray(np.atleast_1d(alpha), jnp.float32)))

    model_rdms = {name: rsa.rdm(feats[name].full, feats[name].mask) if feats[name].full is not None
                  else rsa.rdm(feats[name].projected) for name in layers}
    areas = np.concatenate([rec.areas for rec in data.recordings])
    keep = np.concatenate([ceil["recordings"][rec.name]["keep"] for rec in data.recordings])

    result: dict[str, Any] = {"layers": list(layers), "recordings": {}, "sites": {}, "areas": {}}
    offset = 0
    for rec in data.recordings:
        n_neurons = rec.areas.shape[0]
        r = r_all[:, offset : offset + n_neurons]
        offset += n_neurons
        best, best_layer = aggregate.max_over_layers(r)
        c = ceil["recordings"][rec.name]
        result["recordings"][rec.name] = {
            "unit_ids": rec.unit_ids, "areas": rec.areas, "r": r, "r_max": best,
            "best_layer": best_layer, "reliability": c["reliability"], "keep": c["keep"],
            "inter_animal": c["inter_animal"],
            "ceiled": np.where(c["inter_animal"] > 0, best / np.where(c["inter_animal"] > 0, c["inter_animal"], 1.0), np.nan),
        }
        for area in dict.fromkeys(rec.areas.tolist()):
            sel = (rec.areas == area) & c["keep"]
            site = f"{rec.name}/{area}"
            rdm_neural = rsa.rdm(rec.mean, sel) if sel.sum() >= 2 else None
            rsa_layers = ([float(rsa.compare_rdms(model_rdms[name], rdm_neural, rsa_method)) for name in layers]
                          if rdm_neural is not None else [float("nan")] * len(layers))
            result["sites"][site] = _site(r, best, sel, c, rsa_layers, layers,
                                          ceil["rdm_reliability"].get(site, float("nan")), rec.name, area)

    for area in dict.fromkeys(areas.tolist()):
        sel = (areas == area) & keep
        per_layer = r_all[:, sel].mean(axis=1) if sel.any() else np.full(len(layers), np.nan)
        sites = [s for s in result["sites"].values() if s["area"] == area]
        rsa_per_layer = np.nanmean([s["rsa_per_layer"] for s in sites], axis=0) if sites else None
        commit = aggregate.layer_commitment(r_all[:, sel], list(layers), areas[sel]) if sel.any() else {}
        entry = commit.get(area, {})
        result["areas"][area] = {
            "n_neurons": int(sel.sum()),
            "srp_ridge_max": float(np.nanmean(aggregate.max_over_layers(r_all[:, sel])[0])) if sel.any() else float("nan"),
            "srp_ridge_per_layer": [float(v) for v in np.atleast_1d(per_layer)],
            "inter_animal": _nanmean([s["inter_animal"] for s in sites]),
            "reliability": _nanmean([s["reliability"] for s in sites]),
            "rsa_per_layer": None if rsa_per_layer is None else [float(v) for v in rsa_per_layer],
            "rsa_max": None if rsa_per_layer is None else float(np.nanmax(rsa_per_layer)),
            "rdm_reliability": _nanmean([s["rdm_reliability"] for s in sites]),
            "committed_layer": entry.get("layer"),
            "committed_index": entry.get("index"),
            "relative_depth": entry.get("relative_depth"),
            "rsa_committed_layer": None if rsa_per_layer is None or not np.isfinite(rsa_per_layer).any()
            else layers[int(np.nanargmax(rsa_per_layer))],
        }
        a = result["areas"][area]
        ia = a["inter_animal"]
        a["ceiled"] = a["srp_ridge_max"] / ia if np.isfinite(ia) and ia > 0 else float("nan")
    result["rsa_uses"] = {name: "full" if feats[name].full is not None else "projection" for name in layers}
    result["n_features"] = {name: feats[name].n_features for name in layers}
    result["layer_seeds"] = {name: srp.layer_seed(seed, name) for name in layers}
    return result


def _nanmean(values) -> float:
    arr = np.asarray([v for v in values if v is not None], np.float64)
    return float(np.nanmean(arr)) if arr.size and np.isfinite(arr).any() else float("nan")


def _site(r, best, sel, c, rsa_layers, layers, rdm_rel, mouse, area) -> dict[str, Any]:
    ia = c["inter_animal"][sel]
    ia_mean = float(np.nanmean(ia)) if sel.any() and np.isfinite(ia).any() else float("nan")
    score = float(np.mean(best[sel])) if sel.any() else float("nan")
    return {
        "mouse": mouse, "area": area, "n_neurons": int(sel.sum()),
        "srp_ridge_max": score,
        "srp_ridge_per_layer": [float(np.mean(row[sel])) if sel.any() else float("nan") for row in r],
        "reliability": float(np.nanmean(c["reliability"][sel])) if sel.any() and np.isfinite(c["reliability"][sel]).any() else float("nan"),
        "inter_animal": ia_mean,
        "ceiled": score / ia_mean if np.isfinite(ia_mean) and ia_mean > 0 else float("nan"),
        "rsa_per_layer": rsa_layers,
        "rsa_max": float(np.nanmax(rsa_layers)) if np.isfinite(rsa_layers).any() else float("nan"),
        "rdm_reliability": rdm_rel,
    }
