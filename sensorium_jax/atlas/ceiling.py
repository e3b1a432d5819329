"""The inter-animal ceiling: how well other animals' neurons of the same area predict a neuron."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from sensorium_jax.atlas import srp


def inter_animal_ceiling(
    responses: Mapping[str, np.ndarray],
    areas: Mapping[str, Sequence[Any]],
    *,
    alpha: float | Sequence[float] = 1.0,
    seed: int = 0,
    n_components: int | None = None,
) -> dict[str, np.ndarray]:
    """Per animal, r [neurons] of SRP-ridge with the same-area neurons of all other animals as
    predictors (the same method as for a network layer). NaN where no other animal has the area.

    responses: animal -> [n_stimuli, neurons], the same stimuli in the same order for every animal.
    """
    names = list(responses)
    out = {}
    for name in names:
        own_areas = np.asarray(areas[name])
        r = np.full(own_areas.shape, np.nan, np.float32)
        for area in dict.fromkeys(own_areas.tolist()):
            donors = [
                np.asarray(responses[o])[:, np.asarray(areas[o]) == area] for o in names if o != name
            ]
            donors = [x for x in donors if x.shape[1]]
            if not donors:
                continue
            sel = own_areas == area
            r[sel] = srp.srp_ridge_scores(
                np.concatenate(donors, axis=1),
                np.asarray(responses[name])[:, sel],
                alpha=alpha,
                seed=srp.layer_seed(seed, f"{name}/{area}"),
                n_components=n_components,
            )
        out[name] = r
    return out
