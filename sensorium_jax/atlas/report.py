"""Writing an atlas: atlas.json (everything), atlas.md (the table), and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def _plain(x: Any) -> Any:
    """JSON-ready: arrays to lists, NaN and inf to None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_json(path: Path, results: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """results: one per model, each {"model": name, "atlas": score(...) output}."""
    path.write_text(json.dumps(_plain({"settings": settings, "models": results}), indent=1))


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def markdown(results: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    lines = ["# Atlas", "",
             f"SRP-ridge: sparse random projection (eps {settings['eps']}, components "
             f"{settings['n_components'] or 'JL minimum'}), ridge alpha {settings['alpha']}, leave-one-out r; "
             f"neurons with split-half reliability >= {settings['threshold']} ({settings['n_splits']} splits); "
             f"RSA by {settings['rsa_method']}. Seed {settings['seed']}.", "",
             "| model | area | neurons | SRP-ridge max | inter-animal ceiling | ceiled | reliability | "
             "committed layer (depth) | RSA max | RDM reliability | RSA layer |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for area, a in res["atlas"]["areas"].items():
            depth = _fmt(a["relative_depth"], 2)
            lines.append(
                f"| {res['model']} | {area} | {a['n_neurons']} | {_fmt(a['srp_ridge_max'])} | "
                f"{_fmt(a['inter_animal'])} | {_fmt(a['ceiled'])} | {_fmt(a['reliability'])} | "
                f"{a['committed_layer'] or '-'} ({depth}) | {_fmt(a['rsa_max'])} | "
                f"{_fmt(a['rdm_reliability'])} | {a['rsa_committed_layer'] or '-'} |")
    lines += ["", "Per site (mouse/area):", "",
              "| model | site | neurons | SRP-ridge max | inter-animal | ceiled | RSA max |", "|---|---|---|---|---|---|---|"]
    for res in results:
        for site, s in res["atlas"]["sites"].items():
            lines.append(f"| {res['model']} | {site} | {s['n_neurons']} | {_fmt(s['srp_ridge_max'])} | "
                         f"{_fmt(s['inter_animal'])} | {_fmt(s['ceiled'])} | {_fmt(s['rsa_max'])} |")
    return "\n".join(lines) + "\n"


def plots(out: Path, results: list[dict[str, Any]]) -> list[str]:
    """Score vs relative layer depth per area, RSA per layer, ceiling vs score; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for res in results:
        atlas, tag = res["atlas"], res["model"].replace("/", "_").replace(":", "_")
        depth = np.linspace(0, 1, len(atlas["layers"])) if len(atlas["layers"]) > 1 else np.zeros(1)
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for area, a in atlas["areas"].items():
            axes[0].plot(depth, a["srp_ridge_per_layer"], marker="o", label=area)
            if a["rsa_per_layer"] is not None:
                axes[1].plot(depth, a["rsa_per_layer"], marker="o", label=area)
        axes[0].set(xlabel="relative layer depth", ylabel="mean r (SRP-ridge)", title=f"{res['model']}: SRP-ridge")
        axes[1].set(xlabel="relative layer depth", ylabel="RSA (model vs neural RDM)", title="RSA per layer")
        recs = list(atlas["recordings"].values())
        for area in atlas["areas"]:
            sel = [(np.asarray(r["areas"]) == area) & np.asarray(r["keep"], bool) for r in recs]
            ceiling = np.concatenate([np.asarray(r["inter_animal"], float)[m] for r, m in zip(recs, sel)])
            best = np.concatenate([np.asarray(r["r_max"], float)[m] for r, m in zip(recs, sel)])
            axes[2].scatter(ceiling, best, s=6, alpha=0.5, label=area)
        lim = [0, 1]
        axes[2].plot(lim, lim, "k--", lw=0.8)
        axes[2].set(xlabel="inter-animal ceiling (r)", ylabel="best layer r", title="ceiling vs score (per neuron)")
        for ax in axes:
            ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"atlas_{tag}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written
