"""The atlas numerics against independent implementations (scikit-learn, SciPy, NumPy loops)."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
scipy_stats = pytest.importorskip("scipy.stats")

from sklearn.linear_model import RidgeCV  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.random_projection import SparseRandomProjection, johnson_lindenstrauss_min_dim  # noqa: E402

from sensorium_jax import atlas  # noqa: E402
from sensorium_jax.atlas import aggregate, projection, reliability, rsa  # noqa: E402


def _data(n=40, d=300, neurons=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = x[:, :6] @ rng.standard_normal((6, neurons)) + rng.standard_normal((n, neurons))
    return x, y.astype(np.float32)


def _sklearn_scores(x, y, components, alphas):
    z = StandardScaler().fit_transform(x @ components)
    fit = RidgeCV(alphas=alphas, fit_intercept=True, store_cv_results=True,
                  scoring="neg_mean_squared_error", alpha_per_target=True).fit(z, y)
    loo = fit.cv_results_  # [n, neurons, alphas]
    best = [alphas.index(a) for a in np.atleast_1d(fit.alpha_)]
    pred = loo[:, np.arange(y.shape[1]), best]
    return np.array([scipy_stats.pearsonr(pred[:, i], y[:, i])[0] for i in range(y.shape[1])])


@pytest.mark.parametrize("k", [64, 500])  # 500 > d: the projection increases the dimension
def test_srp_ridge_equals_sklearn_with_the_same_matrix(k):
    x, y = _data()
    srp = SparseRandomProjection(k, density=1 / np.sqrt(x.shape[1]), random_state=3).fit(x)
    ref = _sklearn_scores(x, y, srp.components_.T.toarray(), [1.0])
    sparse = atlas.srp_ridge_scores(x, y, projection=srp.components_.T)
    dense = atlas.srp_ridge_scores(x, y, projection=srp.components_.T.toarray())
    np.testing.assert_allclose(sparse, ref, atol=1e-4)
    np.testing.assert_allclose(dense, ref, atol=1e-4)


def test_alpha_grid_picks_per_neuron_like_sklearn():
    x, y = _data(seed=1)
    srp = SparseRandomProjection(80, density=1 / np.sqrt(x.shape[1]), random_state=0).fit(x)
    alphas = [0.1, 10.0, 1000.0]
    ref = _sklearn_scores(x, y, srp.components_.T.toarray(), alphas)
    ours = atlas.srp_ridge_scores(x, y, projection=srp.components_.T, alpha=alphas)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_jl_dimension_and_random_matrix_distribution():
    assert atlas.jl_min_dim(119, 0.1) == johnson_lindenstrauss_min_dim(119, eps=0.1) == 4096
    d, k = 400, 300
    dense = projection.to_dense(atlas.sparse_random_projection(d, k, seed=0))
    nonzero = dense[dense != 0]
    density = 1 / np.sqrt(d)
    assert abs(nonzero.size / dense.size - density) < 4 * np.sqrt(density / dense.size)
    np.testing.assert_allclose(np.abs(nonzero), 1 / np.sqrt(density * k), rtol=1e-6)
    assert abs((nonzero > 0).mean() - 0.5) < 0.05
    # the same seed gives the same matrix; the sparse product equals the dense one
    again = projection.to_dense(atlas.sparse_random_projection(d, k, seed=0))
    np.testing.assert_array_equal(dense, again)
    x, _ = _data(d=d)
    p = atlas.sparse_random_projection(d, k, seed=0)
    np.testing.assert_allclose(np.asarray(projection.project(x, p)), x @ dense, atol=1e-4)


def test_default_random_projection_scores_like_sklearn_on_average():
    x, y = _data(n=60, d=2000, neurons=30, seed=2)
    ours = atlas.srp_ridge_scores(x, y, seed=0)  # k = JL minimum for 60 stimuli
    k = johnson_lindenstrauss_min_dim(60, eps=0.1)
    srp = SparseRandomProjection(k, density=1 / np.sqrt(2000), random_state=0).fit(x)
    ref = _sklearn_scores(x, y, srp.components_.T.toarray(), [1.0])
    assert abs(ours.mean() - ref.mean()) < 0.05


def test_rsa_equals_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((15, 40)), rng.standard_normal((15, 25))
    ra, rb = np.asarray(rsa.rdm(a)), np.asarray(rsa.rdm(b))
    i, j = np.triu_indices(15, k=1)
    ref_a = np.array([[1 - scipy_stats.pearsonr(a[p], a[q])[0] for q in range(15)] for p in range(15)])
    np.testing.assert_allclose(ra, ref_a, atol=1e-5)
    for method, fn in (("pearson", scipy_stats.pearsonr), ("spearman", scipy_stats.spearmanr)):
        ours = float(rsa.compare_rdms(ra, rb, method))
        assert abs(ours - fn(ra[i, j], rb[i, j])[0]) < 1e-5
    ties = np.array([3.0, 1.0, 3.0, 2.0, 1.0, 3.0])
    np.testing.assert_allclose(np.asarray(rsa.rankdata(ties)), scipy_stats.rankdata(ties))


def test_split_half_spearman_brown_equals_numpy_loop():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((20, 7))
    reps = signal[None] + rng.standard_normal((10, 20, 7)) * np.linspace(0.3, 3, 7)
    reps[3, 5, 2] = np.nan  # one missing repeat
    ours = reliability.split_half_reliability(reps, n_splits=100, seed=4)
    perms = reliability.split_permutations(10, 100, seed=4)
    rs = []
    for p in perms:
        a, b = np.nanmean(reps[p[:5]], 0), np.nanmean(reps[p[5:]], 0)
        rs.append([np.corrcoef(a[:, c], b[:, c])[0, 1] for c in range(7)])
    r = np.mean(rs, axis=0)
    np.testing.assert_allclose(ours, 2 * r / (1 + r), atol=1e-5)
    assert ours[0] > ours[-1]  # less noise, more reliable
    rdm_r = np.mean([
        scipy_stats.pearsonr(*(
            np.asarray(rsa.rdm(np.nanmean(reps[h], 0)))[np.triu_indices(20, 1)] for h in (p[:5], p[5:])
        ))[0] for p in perms
    ])
    assert abs(reliability.rdm_reliability(reps, seed=4) - 2 * rdm_r / (1 + rdm_r)) < 1e-5


def test_aggregation_and_commitment():
    scores = np.array([[0.1, 0.5, 0.2], [0.3, 0.2, 0.1], [0.2, 0.1, 0.6]])
    best, idx = aggregate.max_over_layers(scores)
    np.testing.assert_allclose(best, [0.3, 0.5, 0.6])
    np.testing.assert_array_equal(idx, [1, 0, 2])
    areas = ["V1", "V1", "LM"]
    assert aggregate.site_means(best, areas) == pytest.approx({"V1": 0.4, "LM": 0.6})
    commit = aggregate.layer_commitment(scores, ["a", "b", "c"], areas)
    assert commit["V1"]["layer"] == "a" and commit["LM"]["layer"] == "c"
    assert commit["LM"]["relative_depth"] == 1.0


def test_inter_animal_ceiling_tracks_shared_signal():
    from sensorium_jax.atlas.ceiling import inter_animal_ceiling

    rng = np.random.default_rng(0)
    latent = rng.standard_normal((50, 5))
    resp, areas = {}, {}
    for m in ("m0", "m1", "m2"):
        w = rng.standard_normal((5, 8))
        noise = np.r_[np.full(4, 0.2), np.full(4, 5.0)]
        resp[m] = latent @ w + rng.standard_normal((50, 8)) * noise
        areas[m] = ["V1"] * 8
    ceil = inter_animal_ceiling(resp, areas, n_components=256)
    for m in resp:
        assert ceil[m][:4].mean() > ceil[m][4:].mean() + 0.3
    alone = inter_animal_ceiling({"m0": resp["m0"]}, {"m0": areas["m0"]})
    assert np.isnan(alone["m0"]).all()
