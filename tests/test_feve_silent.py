"""FEVE of a neuron that is silent in the scored trials: excluded, not a -1e11 outlier."""

from __future__ import annotations

import numpy as np

from sensorium_jax import metrics as M


def test_a_nearly_silent_neuron_gets_zero_fev_and_does_not_swamp_the_mean():
    rng = np.random.default_rng(0)
    images, repeats, neurons = 6, 4, 3
    signal = rng.normal(size=(images, neurons))
    ids = np.repeat(np.arange(images), repeats)
    responses = signal[ids] + 0.3 * rng.normal(size=(ids.size, neurons))
    # Neuron 2 is silent in these trials: consistent across repeats but at the 1e-7 scale
    # (as a neuron normalised by its training std and quiet in a test tier).
    responses[:, 2] = 1e-7 * signal[ids, 2]
    predictions = signal[ids] + 0.5
    feve, fev = M.feve_and_fev(responses.astype(np.float32), predictions.astype(np.float32), ids)
    assert fev[2] == 0 and feve[2] == 0
    values, kept = M.feve(responses.astype(np.float32), predictions.astype(np.float32), ids, threshold=0.15,
                          return_kept=True)
    assert kept[:2].all() and not kept[2]
    assert np.all(np.abs(values) < 10)
