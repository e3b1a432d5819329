"""SRP-ridge per layer: this implementation next to scikit-learn, same data, in one run.

Default size (the paper's): 119 stimuli x 50,000 features -> 4,096 components (the
Johnson-Lindenstrauss minimum for 119 stimuli at eps 0.1) x 6,000 neurons, alpha 1.
Per layer, scikit-learn runs SparseRandomProjection (fit + transform), StandardScaler,
RidgeCV (generalised cross-validation, leave-one-out predictions stored) and a Pearson r per
neuron; this implementation runs its own projection (drawn on device), z-scoring, dual-form
GCV and r. Both are timed end to end from host arrays, after one warm-up (compilation is
reported separately), interleaved over rounds, median kept. Scores are compared with the
scikit-learn matrix given to this implementation explicitly.

    python benchmarks/bench_atlas.py [--stimuli 119 --features 50000 --neurons 6000 --rounds 3]
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags

from sensorium_jax import atlas

FLAGS = flags.FLAGS
flags.DEFINE_integer("stimuli", 119, "Stimuli (rows).")
flags.DEFINE_integer("features", 50_000, "Features of the layer.")
flags.DEFINE_integer("neurons", 6_000, "Neurons.")
flags.DEFINE_integer("components", 0, "Projection size; 0 = Johnson-Lindenstrauss minimum at eps 0.1.")
flags.DEFINE_integer("rounds", 3, "Timing rounds (median kept); each round is one new layer.")


def sklearn_layer(x: np.ndarray, y: np.ndarray, k: int, seed: int):
    """The reference pipeline; returns r per neuron and the projection it drew ([d, k], sparse)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler
    from sklearn.random_projection import SparseRandomProjection

    srp = SparseRandomProjection(k, density=1 / np.sqrt(x.shape[1]), random_state=seed)
    z = StandardScaler().fit_transform(srp.fit_transform(x))
    fit = RidgeCV(alphas=[1.0], fit_intercept=True, store_cv_results=True,
                  scoring="neg_mean_squared_error").fit(z, y)
    pred = fit.cv_results_[:, :, 0]
    pc, yc = pred - pred.mean(0), y - y.mean(0)
    r = (pc * yc).sum(0) / np.sqrt((pc * pc).sum(0) * (yc * yc).sum(0))
    return r, srp.components_.T


def main(argv) -> None:
    del argv
    n, d, neurons = FLAGS.stimuli, FLAGS.features, FLAGS.neurons
    k = FLAGS.components or atlas.jl_min_dim(n, 0.1)
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((n, 16)).astype(np.float32)  # what the layer and the neurons share
    x = np.maximum(latent @ rng.standard_normal((16, d)).astype(np.float32)
                   + 2 * rng.standard_normal((n, d)).astype(np.float32), 0)  # ReLU-like layer output
    y = latent @ rng.standard_normal((16, neurons)).astype(np.float32)
    y += 2 * y.std() * rng.standard_normal(y.shape).astype(np.float32)
    print(f"{n} stimuli x {d:,} features -> {k:,} components x {neurons:,} neurons, alpha 1; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, {FLAGS.rounds} rounds")

    t0 = time.perf_counter()
    atlas.srp_ridge_scores(x, y, seed=0, n_components=k)
    compile_s = time.perf_counter() - t0

    ours_s, ref_s, given_s, max_diff = [], [], [], 0.0
    for round_ in range(FLAGS.rounds):
        seed = round_ + 1
        t0 = time.perf_counter()
        atlas.srp_ridge_scores(x, y, seed=seed, n_components=k)
        ours_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref, matrix = sklearn_layer(x, y, k, seed)
        ref_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        same = atlas.srp_ridge_scores(x, y, projection=matrix)
        given_s.append(time.perf_counter() - t0)
        max_diff = max(max_diff, float(np.abs(same - ref).max()))

    ours, ref_t, given = (float(np.median(v)) for v in (ours_s, ref_s, given_s))
    print(f"first call (compilation + run): {compile_s:.2f} s")
    print(f"scikit-learn per layer:                   {ref_t:8.3f} s")
    print(f"sensorium_jax.atlas per layer:            {ours:8.3f} s   ({ref_t / ours:.1f}x faster)")
    print(f"  with scikit-learn's matrix given (incl. conversion from SciPy): {given:.3f} s")
    print(f"max |r difference| with the same matrix: {max_diff:.2e} over {neurons:,} neurons "
          f"(mean r {float(np.mean(ref)):.3f})")


if __name__ == "__main__":
    app.run(main)
