"""Device prefetch: batches placed ahead, without moving the checkpointed input position."""

import grain
import numpy as np
import pytest

from sensorium_jax.training.device_prefetch import DevicePrefetcher


def _source():
    return iter(grain.MapDataset.range(100).map(lambda i: {"x": np.full(2, i)}).to_iter_dataset())


def _placed(log):
    def place(batch):
        log.append(int(batch["x"][0]))
        return {"x": batch["x"] + 1000}  # stands in for the device copy
    return place


@pytest.mark.parametrize("size", [0, 1, 3])
def test_places_ahead_and_resumes_at_the_first_batch_not_handed_out(size):
    log = []
    batches = DevicePrefetcher(_source(), _placed(log), size)
    first = [int(next(batches)["x"][0]) for _ in range(4)]
    assert first == [1000, 1001, 1002, 1003]
    assert log == list(range(4 + size))  # `size` batches already placed beyond those handed out
    saved = batches.get_state()
    expected = [int(next(batches)["x"][0]) for _ in range(5)]

    resumed = DevicePrefetcher(_source(), _placed([]), size)
    resumed.set_state(saved)
    assert [int(next(resumed)["x"][0]) for _ in range(5)] == expected == list(range(1004, 1009))


def test_finite_source_ends_cleanly():
    source = iter(grain.MapDataset.range(3).map(lambda i: {"x": np.full(1, i)}).to_iter_dataset())
    assert [int(b["x"][0]) for b in DevicePrefetcher(source, lambda b: b, 2)] == [0, 1, 2]


def test_negative_size_is_refused():
    with pytest.raises(ValueError, match="device_prefetch"):
        DevicePrefetcher(_source(), lambda b: b, -1)
