"""Distillation: the loss weights recorded and predicted entries as the first-place recipe does,
every model reads every mouse, DwiseNeuro's one-pass override equals the default, and a run
distils from a teacher workdir (and refuses one trained on other mice)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sensorium_jax.errors import InputDataError
from sensorium_jax.models import base, build_model, get_loss
from sensorium_jax.models.losses import loss_scale
from sensorium_jax.training.distillation import TEACHER_RATES, distillation_loss
from test_dwiseneuro import CLIP
from test_dwiseneuro import tiny_config as tiny_dwiseneuro
from test_models import make_batch, make_card


class FixedRates(base.Model):
    """Rates that depend on the clip and the mouse it is read by, no parameters: the loss alone."""

    def __init__(self, n_max: int):
        self.n_max = n_max

    def __call__(self, batch, train=False):
        level = jnp.mean(batch["video"], axis=(2, 3, 4))[..., None]  # [B, T, 1]
        mouse = batch["mouse"].astype(jnp.float32)[:, None, None]
        return jax.nn.softplus(level + 0.3 * mouse + 0.1 * jnp.arange(self.n_max))

    def frames_lost(self):
        return 0

    def readout_positions(self):
        return base.ReadoutPositions(None, "none")


def poisson_sum(prediction: np.ndarray, target: np.ndarray) -> float:
    """torch's PoissonNLLLoss(log_input=False, full=False, eps=1e-8) summed: the reference's."""
    return float(np.sum(prediction - target * np.log(prediction + 1e-8)))


@pytest.mark.parametrize("scale_name", ["mean", "reference"])
def test_predicted_entries_make_the_ratio_of_the_weight(scale_name):
    card = make_card(n_neurons=(3, 5, 4))
    mice, n_counts, ratio = [0, 2, 2, 1], (3, 5, 4), 0.36
    batch = {k: jnp.asarray(v) for k, v in make_batch(card, mice, frames=4).items()}
    model = FixedRates(card.max_neurons)
    every = np.asarray(model.every_mouse_predictions(batch, 3))  # [M, B, T, N]
    rng = np.random.default_rng(0)
    teacher = rng.uniform(0.2, 2.0, (len(mice), 3, 4, card.max_neurons)).astype(np.float32)
    scale = loss_scale(scale_name, [40, 30, 20])
    loss, reported = distillation_loss(model, {**batch, TEACHER_RATES: jnp.asarray(teacher)}, get_loss("poisson"),
                                       scale, ratio, n_counts)

    responses = np.asarray(batch["responses"])
    weights = np.ones(len(mice)) if scale_name == "mean" else \
        np.sqrt(np.array([40, 30, 20])[mice] / np.array([mice.count(m) for m in mice]))
    real = sum(w * poisson_sum(every[m, b, :, :n_counts[m]], responses[b, :, :n_counts[m]])
               for b, (m, w) in enumerate(zip(mice, weights)))
    pairs = [(b, m) for b in range(len(mice)) for m in range(3) if m != mice[b]]
    pair_weight = ratio / (1 - ratio) * weights.sum() / len(pairs)
    predicted = pair_weight * sum(poisson_sum(every[m, b, :, :n_counts[m]], teacher[b, m, :, :n_counts[m]])
                                  for b, m in pairs)
    normaliser = sum(4 * n_counts[m] for m in mice) if scale_name == "mean" else 1.0
    # torch's loss without the target's constant terms; ours is the same up to terms free of the prediction
    np.testing.assert_allclose(float(reported["loss"]) + float(reported["distillation"]),
                               (real + predicted) / normaliser, rtol=2e-5)
    np.testing.assert_allclose(float(loss), (real + predicted) / normaliser, rtol=2e-5)
    # the predicted pairs' total weight is `ratio` of all weight
    np.testing.assert_allclose(pair_weight * len(pairs) / (pair_weight * len(pairs) + weights.sum()), ratio)


def test_every_mouse_predictions_read_each_clip_by_each_mouse():
    card = make_card(n_neurons=(3, 5))
    batch = {k: jnp.asarray(v) for k, v in make_batch(card, [1, 0, 1], frames=3).items()}
    model = FixedRates(card.max_neurons)
    every = model.every_mouse_predictions(batch, 2)
    for m in range(2):
        alone = model({**batch, "mouse": jnp.full((3,), m, jnp.int32)})
        np.testing.assert_allclose(np.asarray(every[m]), np.asarray(alone), rtol=1e-6)


def test_dwiseneuro_reads_every_mouse_in_one_core_pass_as_the_default_would():
    card = make_card(n_neurons=(5, 9), frame_shape=(12, 16))
    model = build_model(tiny_dwiseneuro(), card, nnx.Rngs(jax.random.key(0, impl="rbg")))
    batch = {k: jnp.asarray(v) for k, v in make_batch(card, [0, 1, 1], frames=CLIP).items()}
    one_pass = model.every_mouse_predictions(batch, 2, train=False)
    default = base.Model.every_mouse_predictions(model, batch, 2, train=False)
    assert one_pass.shape == (2, 3, CLIP, card.max_neurons)
    np.testing.assert_allclose(np.asarray(one_pass), np.asarray(default), rtol=1e-5, atol=1e-6)


def test_a_run_distils_from_a_teacher_workdir_and_refuses_other_mice(tiny_store, tmp_path):
    from sensorium_jax.training.loop import train_and_evaluate
    from sensorium_jax.training.logging_utils import read_metrics
    from toy_config import get_config

    teacher_config = get_config()
    teacher_config.data.store = str(tiny_store)
    train_and_evaluate(teacher_config, tmp_path / "teacher")

    student = get_config()
    student.data.store = str(tiny_store)
    student.seed = 1
    student.train.distill.teacher = str(tmp_path / "teacher")
    train_and_evaluate(student, tmp_path / "student")
    records = read_metrics(tmp_path / "student", "train")
    assert records and all(r["distillation"] > 0 and np.isfinite(r["loss"]) for r in records)
    assert json.loads((tmp_path / "student" / "config.json").read_text())["train"]["distill"]["ratio"] == 0.36

    other = get_config()
    other.data.synthetic_mice = 1  # a store with one mouse: the teacher reads two
    other.data.cache_dir = str(tmp_path / "cache")
    other.train.distill.teacher = str(tmp_path / "teacher")
    with pytest.raises(InputDataError, match="dataset_card.mice"):
        train_and_evaluate(other, tmp_path / "other")
