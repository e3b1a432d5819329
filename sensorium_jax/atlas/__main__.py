"""CLI: `python -m sensorium_jax.atlas --model alexnet --store STORE --out DIR`.

--model: a registered name (alexnet, vgg16, resnet18, resnet50, tiny_cnn), several separated by
commas, or a training workdir (scored through its Predictor). --store: a store path, or
`synthetic` for the atlas's own areas with a known hierarchy (V1, LM, AL).
Writes DIR/atlas.json, DIR/atlas.md and DIR/atlas_<model>.png.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("model", "alexnet", "registered model name(s), comma separated, or a workdir")
    flags.DEFINE_string("store", "synthetic", "store path, or 'synthetic'")
    flags.DEFINE_string("out", None, "output folder", required=True)
    flags.DEFINE_list("layers", [], "layers to score (default: all of the model's)")
    flags.DEFINE_list("alpha", ["1.0"], "ridge penalty, or a grid (per neuron, least LOO error)")
    flags.DEFINE_integer("seed", 0, "seed of the projections, splits, random initialisations")
    flags.DEFINE_integer("components", 0, "projection size (0: Johnson-Lindenstrauss minimum at --eps)")
    flags.DEFINE_float("eps", 0.1, "Johnson-Lindenstrauss distortion")
    flags.DEFINE_float("threshold", 0.8, "split-half reliability a neuron needs to count")
    flags.DEFINE_integer("splits", 100, "random split-halves for reliabilities")
    flags.DEFINE_enum("rsa", "pearson", ["pearson", "spearman"], "RDM comparison")
    flags.DEFINE_integer("image_size", 224, "input size of the standard architectures")
    flags.DEFINE_integer("batch_size", 16, "stimuli per forward pass")
    flags.DEFINE_list("tiers", [], "store tiers to use (default: the validation tier)")
    flags.DEFINE_list("mice", [], "store mice to use (default: all)")
    flags.DEFINE_enum("frames", "mean", ["mean", "each"], "video stimuli: clip mean, or each frame a stimulus")
    flags.DEFINE_integer("frame_stride", 10, "video: every n-th frame after the burn-in")
    flags.DEFINE_integer("synthetic_stimuli", 119, "synthetic: number of stimuli")
    flags.DEFINE_integer("synthetic_mice", 3, "synthetic: number of mice")
    flags.DEFINE_integer("synthetic_neurons", 40, "synthetic: neurons per area per mouse")
    flags.DEFINE_float("synthetic_noise", 0.5, "synthetic: trial-to-trial noise (times the signal's std)")
    flags.DEFINE_boolean("progress", True, "progress bars")


def _datasets():
    from sensorium_jax.atlas import store_data, synthetic

    if FLAGS.store == "synthetic":
        return [synthetic.make(n_stimuli=FLAGS.synthetic_stimuli, mice=FLAGS.synthetic_mice,
                               neurons_per_area=FLAGS.synthetic_neurons, noise=FLAGS.synthetic_noise,
                               seed=FLAGS.seed)]
    return store_data.from_store(FLAGS.store, mice=FLAGS.mice or None, tiers=FLAGS.tiers,
                                 frames=FLAGS.frames, frame_stride=FLAGS.frame_stride)


def _model(name: str):
    from sensorium_jax.atlas import models, trained

    if Path(name).exists():
        return trained.from_workdir(name)
    return models.get(name, seed=FLAGS.seed, image_size=FLAGS.image_size)


def _merge(parts: list[dict]) -> dict:
    """Atlases of mouse groups with different stimuli: recordings and sites side by side; areas
    averaged over groups weighted by neurons."""
    if len(parts) == 1:
        return parts[0]
    import numpy as np

    out = {k: parts[0][k] for k in ("layers", "rsa_uses", "n_features", "layer_seeds")}
    out["recordings"] = {k: v for p in parts for k, v in p["recordings"].items()}
    out["sites"] = {k: v for p in parts for k, v in p["sites"].items()}
    out["areas"] = {}
    for area in dict.fromkeys(a for p in parts for a in p["areas"]):
        entries = [p["areas"][area] for p in parts if area in p["areas"]]
        w = np.asarray([e["n_neurons"] for e in entries], float)
        w = w / w.sum() if w.sum() else np.full(len(entries), 1.0 / len(entries))

        def avg(key):
            vals = [e[key] for e in entries]
            if any(v is None for v in vals):
                return None
            return (np.asarray(vals, float).T @ w).tolist() if isinstance(vals[0], list) else float(np.asarray(vals, float) @ w)

        merged = {k: avg(k) for k in ("srp_ridge_max", "srp_ridge_per_layer", "inter_animal", "reliability",
                                      "rsa_per_layer", "rsa_max", "rdm_reliability", "ceiled")}
        merged["n_neurons"] = int(sum(e["n_neurons"] for e in entries))
        per_layer = merged["srp_ridge_per_layer"]
        best = int(np.nanargmax(per_layer)) if per_layer is not None and np.isfinite(per_layer).any() else None
        merged["committed_layer"] = None if best is None else out["layers"][best]
        merged["committed_index"] = best
        merged["relative_depth"] = None if best is None else best / max(len(out["layers"]) - 1, 1)
        rsa_l = merged["rsa_per_layer"]
        merged["rsa_committed_layer"] = (out["layers"][int(np.nanargmax(rsa_l))]
                                         if rsa_l is not None and np.isfinite(rsa_l).any() else None)
        out["areas"][area] = merged
    return out


def main(argv: Sequence[str]) -> None:
    del argv
    from sensorium_jax.atlas import report, score

    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    alpha = [float(a) for a in FLAGS.alpha]
    settings = {
        "store": FLAGS.store, "alpha": alpha if len(alpha) > 1 else alpha[0], "seed": FLAGS.seed,
        "n_components": FLAGS.components or None, "eps": FLAGS.eps, "threshold": FLAGS.threshold,
        "n_splits": FLAGS.splits, "rsa_method": FLAGS.rsa, "image_size": FLAGS.image_size,
        "frames": FLAGS.frames, "frame_stride": FLAGS.frame_stride, "tiers": FLAGS.tiers,
        "projection": "sparse random, density 1/sqrt(d), columns z-scored; per-layer seed from --seed and the layer name",
        "ridge": "intercept, generalised (exact leave-one-out) cross-validation, Pearson r per neuron",
    }
    datasets = _datasets()
    settings["datasets"] = [{"source": d.source, "n_stimuli": int(d.stimuli.shape[0]),
                             "mice": [r.name for r in d.recordings]} for d in datasets]
    results = []
    for name in FLAGS.model.split(","):
        t0 = time.perf_counter()
        model = _model(name.strip())
        parts = [score.score(model, d, layers=FLAGS.layers or None, alpha=alpha, seed=FLAGS.seed,
                             n_components=FLAGS.components or None, eps=FLAGS.eps, threshold=FLAGS.threshold,
                             n_splits=FLAGS.splits, rsa_method=FLAGS.rsa, batch_size=FLAGS.batch_size,
                             progress=FLAGS.progress) for d in datasets]
        results.append({"model": model.name, "model_settings": model.settings,
                        "seconds": time.perf_counter() - t0, "atlas": _merge(parts)})
    report.write_json(out / "atlas.json", results, settings)
    (out / "atlas.md").write_text(report.markdown(results, settings))
    report.plots(out, results)
    print((out / "atlas.md").read_text())


def run() -> None:
    define_flags()
    try:
        app.run(main)
    except (KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
