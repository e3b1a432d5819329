"""Where a model meets a store: mice matched by name, neurons by unit id, never by position.

A store's mouse index and neuron order are its own; a model's readouts follow its dataset
card. Scoring a store in another order, a subset of the mice, or a mouse whose neurons are
reordered or a subset of the model's must give the same per-neuron predictions, so every
consumer (the tier loop, the submission writer, plots) goes through a `MouseMatch`.

Store neurons the model has no readout for are refused (`InputDataError`): scoring only the
known ones would silently change what the score means.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.errors import InputDataError


@dataclasses.dataclass(frozen=True)
class MouseMatch:
    """One store mouse bound to the model's readout of the same name.

    `neurons[i]` is the model's readout column of the store's neuron i (same unit id), so
    `predictions[..., neurons]` puts the model's output in the store's neuron order.
    """

    mouse: str
    model_index: int  # the mouse's index in the model's card (the batch's `mouse` value)
    neurons: np.ndarray  # int64 [N_store]

    @property
    def is_identity(self) -> bool:
        """True when the store's neurons are the model's first N, in order."""
        return bool(np.array_equal(self.neurons, np.arange(len(self.neurons))))


def neuron_order(model_ids: np.ndarray, store_ids: np.ndarray, *, where: str | Path, mouse: str) -> np.ndarray:
    """Pure: int64 [N_store], the position in `model_ids` of each of `store_ids`.

    A reordering or a subset of the model's ids gathers; ids the model does not have, or
    ids repeated in either array, are refused with one line naming the mouse and the count.
    """
    model_ids = np.asarray(model_ids, np.int64).reshape(-1)
    store_ids = np.asarray(store_ids, np.int64).reshape(-1)
    for label, ids in (("model", model_ids), ("store", store_ids)):
        if len(np.unique(ids)) != len(ids):
            raise InputDataError(where, f"{mouse} unit_ids", f"unique unit ids in the {label}",
                                 f"{len(ids) - len(np.unique(ids))} repeated")
    order = np.argsort(model_ids, kind="stable")
    slots = np.searchsorted(model_ids, store_ids, sorter=order)
    slots = np.minimum(slots, len(model_ids) - 1) if len(model_ids) else slots
    known = (model_ids[order[slots]] == store_ids) if len(model_ids) else np.zeros(len(store_ids), bool)
    if not known.all():
        unknown = store_ids[~known]
        example = ", ".join(str(i) for i in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise InputDataError(where, f"{mouse} unit_ids",
                             f"neurons the model has a readout for ({len(model_ids)} unit ids)",
                             f"{len(unknown)} of {len(store_ids)} unit ids unknown to the model ({example})")
    return order[slots].astype(np.int64)


def mouse_index(card: DatasetCard, mouse: str, *, where: str | Path) -> int:
    """The card's index of the mouse called `mouse`; one line listing the model's mice otherwise."""
    if mouse not in card.names:
        raise InputDataError(where, "mouse", f"one of the model's mice ({', '.join(card.names)})", repr(mouse))
    return card.names.index(mouse)


def match_mouse(card: DatasetCard, mouse: str, unit_ids: np.ndarray, *, where: str | Path) -> MouseMatch:
    """Pure: the store mouse `mouse` with neurons `unit_ids` matched to the model's card."""
    index = mouse_index(card, mouse, where=where)
    neurons = neuron_order(card.mice[index].unit_ids, unit_ids, where=where, mouse=mouse)
    return MouseMatch(mouse=mouse, model_index=index, neurons=neurons)


def match_store(card: DatasetCard, store, mice: Sequence[str] | None = None) -> dict[str, MouseMatch]:
    """Every (or the given) store mouse matched to the model; one line names all unknown mice."""
    mice = list(store.mice if mice is None else mice)
    unknown = [m for m in mice if m not in card.names]
    if unknown:
        raise InputDataError(store.path, "mice", f"mice the model was trained on ({', '.join(card.names)})",
                             ", ".join(unknown))
    return {mouse: match_mouse(card, mouse, store.meta(mouse).unit_ids, where=store.path)
            for mouse in mice}


def as_model_batch(batch: dict[str, np.ndarray], match: MouseMatch) -> dict[str, np.ndarray]:
    """An eval batch of the store (its `mouse` is the store's index) with the model's index."""
    return dict(batch, mouse=np.full_like(np.asarray(batch["mouse"]), match.model_index))


def to_store_neurons(predictions: np.ndarray, match: MouseMatch) -> np.ndarray:
    """Model predictions [..., Nmax] -> [..., N_store] in the store's neuron order."""
    return predictions[..., match.neurons]
