"""A model meets another store: mice matched by name, neurons by unit id, never by position.

Derived stores are converted from the tiny preset's regenerated source folders (deterministic
from the seed, so the same data as `tiny_store`): the mice in reverse order, the second mouse
alone, the second mouse with its neurons permuted (and a subset of them), a mouse the model
does not know, and a mouse with unit ids the model has no readout for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import sensorium_jax
from sensorium_jax.data.convert import convert
from sensorium_jax.data.store import open_store
from sensorium_jax.errors import InputDataError
from sensorium_jax.evaluation.evaluators import get_evaluators
from sensorium_jax.evaluation.matching import match_mouse, match_store, neuron_order
from sensorium_jax.evaluation.report import run_evaluation
from sensorium_jax.evaluation.scoring import score_tier

NEURON_FILES = ("data/responses", "meta/neurons", "meta/statistics/responses")  # arrays with neurons first
SCORE = "single_trial_correlation"


# ----------------------------------------------------------------------------- pure matching

def test_neuron_order_gathers_a_reordering_and_a_subset():
    model = np.array([100, 101, 102, 103, 104])
    assert neuron_order(model, model, where="s", mouse="m").tolist() == [0, 1, 2, 3, 4]
    assert neuron_order(model, [104, 100, 102], where="s", mouse="m").tolist() == [4, 0, 2]
    predictions = np.arange(10.0).reshape(2, 5)
    np.testing.assert_array_equal(predictions[:, neuron_order(model, [103, 101], where="s", mouse="m")],
                                  [[3, 1], [8, 6]])


def test_neuron_order_refuses_unknown_and_repeated_ids_in_one_line():
    with pytest.raises(InputDataError, match=r"^store: m unit_ids: .*found 2 of 3 unit ids unknown.*\(7, 9\)$"):
        neuron_order(np.array([100, 101]), np.array([7, 100, 9]), where="store", mouse="m")
    with pytest.raises(InputDataError, match="1 repeated"):
        neuron_order(np.array([100, 101]), np.array([100, 100]), where="store", mouse="m")


def test_match_store_refuses_unknown_mice_naming_store_mice_and_the_models(tiny_store):
    store = open_store(tiny_store)
    card = store.card()
    assert [m.model_index for m in match_store(card, store).values()] == [0, 1]
    other = card.__class__(mice=card.mice[1:], frame_shape=card.frame_shape, behavior_dim=card.behavior_dim,
                           kind=card.kind)
    with pytest.raises(InputDataError) as error:
        match_store(other, store)
    message = str(error.value)
    assert "\n" not in message and str(tiny_store) in message and store.mice[0] in message
    assert f"({store.mice[1]})" in message  # the model's mice
    assert match_mouse(card, store.mice[1], store.meta(store.mice[1]).unit_ids[::-1], where="s").neurons[0] == \
        store.meta(store.mice[1]).n_neurons - 1


# ----------------------------------------------------------------------------- derived stores

@pytest.fixture(scope="module")
def sources(tiny_store, tmp_path_factory) -> list[Path]:
    """The tiny store's source folders again (the cached store keeps none), checked identical."""
    from sensorium_jax.data import synthetic

    paths = synthetic.generate(tmp_path_factory.mktemp("sources"), preset="tiny", seed=0, progress=False)
    store = open_store(tiny_store)
    assert [p.name for p in paths] == list(store.mice)
    for path in paths:
        np.testing.assert_array_equal(np.load(path / "meta/neurons/unit_ids.npy"), store.meta(path.name).unit_ids)
    return paths


def edited_copy(source: Path, root: Path, name: str | None = None, neurons: np.ndarray | None = None,
                unit_ids=None) -> Path:
    """A copy of a mouse folder (renamed), with its neurons taken in the order `neurons` and/or
    its unit ids replaced."""
    copy = root / (name or source.name)
    shutil.copytree(source, copy)
    if neurons is not None:
        for folder in NEURON_FILES:
            for file in (copy / folder).rglob("*.npy"):
                np.save(file, np.load(file)[neurons])
    if unit_ids is not None:
        np.save(copy / "meta/neurons/unit_ids.npy", np.asarray(unit_ids, np.int64))
    return copy


def converted(sources: list[Path], out: Path) -> Path:
    convert(sources, out, progress=False)
    return out


@pytest.fixture(scope="module")
def model(trained_smoke_workdir):
    return sensorium_jax.load(trained_smoke_workdir)


@pytest.fixture(scope="module")
def reference(model, tiny_store, tmp_path_factory):
    """Per-neuron oracle scores of every mouse of the training store itself."""
    store = open_store(tiny_store)
    return {m: per_neuron(model, store, m) for m in store.mice}


def per_neuron(model, store, mouse: str) -> np.ndarray:
    result = score_tier(model, store, mouse, "oracle", get_evaluators(["single_trial"]), batch_size=8)
    return result.results["single_trial"].per_neuron[SCORE]


def evaluate(model, store_path: Path, out: Path) -> dict:
    return run_evaluation(model, open_store(store_path), out, tiers=["oracle"], evaluators=["single_trial"])


def test_a_store_with_the_mice_in_another_order_scores_the_same(model, sources, tiny_store, tmp_path):
    original = evaluate(model, tiny_store, tmp_path / "original")
    reordered_path = converted(list(reversed(sources)), tmp_path / "reversed")
    assert open_store(reordered_path).mice == tuple(reversed(open_store(tiny_store).mice))
    reordered = evaluate(model, reordered_path, tmp_path / "reordered")
    for mouse, tiers in original["mice"].items():
        assert reordered["mice"][mouse]["oracle"][SCORE] == pytest.approx(tiers["oracle"][SCORE], abs=1e-6), mouse
    assert reordered["pooled"]["oracle"][SCORE] == pytest.approx(original["pooled"]["oracle"][SCORE], abs=1e-6)


def test_a_store_of_the_second_mouse_only_scores_it_as_the_full_store(model, sources, reference, tmp_path):
    second = sources[1].name
    store = open_store(converted([sources[1]], tmp_path / "second"))
    np.testing.assert_allclose(per_neuron(model, store, second), reference[second], atol=1e-6)


def test_permuted_and_subset_neurons_are_matched_by_unit_id(model, sources, reference, tmp_path):
    second = sources[1].name
    n = len(reference[second])
    permutation = np.random.default_rng(0).permutation(n)
    store = open_store(converted([edited_copy(sources[1], tmp_path / "permuted", neurons=permutation)],
                                 tmp_path / "permuted_store"))
    np.testing.assert_array_equal(store.meta(second).unit_ids, model.neuron_ids(second)[permutation])
    np.testing.assert_allclose(per_neuron(model, store, second), reference[second][permutation], atol=1e-6)

    subset = permutation[: n // 2]
    store = open_store(converted([edited_copy(sources[1], tmp_path / "subset", neurons=subset)],
                                 tmp_path / "subset_store"))
    np.testing.assert_allclose(per_neuron(model, store, second), reference[second][subset], atol=1e-6)


def test_a_mouse_the_model_does_not_know_is_refused_in_one_line(model, sources, tmp_path):
    store = open_store(converted([edited_copy(sources[1], tmp_path / "renamed", name="stranger")],
                                 tmp_path / "stranger_store"))
    with pytest.raises(InputDataError) as error:
        score_tier(model, store, "stranger", "oracle", get_evaluators(["single_trial"]))
    message = str(error.value)
    assert "\n" not in message and str(store.path) in message and "'stranger'" in message
    assert all(mouse in message for mouse in model.mice)


def test_neurons_the_model_has_no_readout_for_are_refused_in_one_line(model, sources, tmp_path):
    ids = np.load(sources[1] / "meta/neurons/unit_ids.npy").copy()
    ids[:3] += 10_000_000
    store = open_store(converted([edited_copy(sources[1], tmp_path / "foreign", unit_ids=ids)],
                                 tmp_path / "foreign_store"))
    with pytest.raises(InputDataError, match=rf"{sources[1].name} unit_ids: .*found 3 of {len(ids)} unit ids unknown"):
        run_evaluation(model, store, tmp_path / "out", tiers=["oracle"], evaluators=["single_trial"])
    assert not (tmp_path / "out").exists()  # refused before anything is written
