"""The atlas: how well each layer of a network predicts mouse visual cortex.

Numerics (pure JAX): `srp_ridge_scores` (one layer), `projected_gram` / `scores_from_grams`
(many layers and neurons in one batched computation), `rsa`, `reliability`, `ceiling`,
`aggregate`. Models: `models.get(name)`, `models.register_features(name, fn)`,
`trained.from_workdir(path)`. Data: `synthetic.make()`, `store_data.from_store(path)`.
The whole atlas of a model: `score.score(model, data)`; the CLI: `python -m sensorium_jax.atlas`.
"""

from sensorium_jax.atlas.projection import SparseProjection, jl_min_dim, sparse_random_projection
from sensorium_jax.atlas.reliability import rdm_reliability, spearman_brown, split_half_reliability
from sensorium_jax.atlas.rsa import compare_rdms, rdm
from sensorium_jax.atlas.srp import layer_grams, projected_gram, scores_from_grams, srp_ridge_scores

__all__ = [
    "SparseProjection",
    "compare_rdms",
    "jl_min_dim",
    "layer_grams",
    "projected_gram",
    "rdm",
    "rdm_reliability",
    "scores_from_grams",
    "spearman_brown",
    "sparse_random_projection",
    "split_half_reliability",
    "srp_ridge_scores",
]
