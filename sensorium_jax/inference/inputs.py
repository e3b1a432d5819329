"""Raw recordings -> the model's normalized, pipeline-layout inputs.

Written with array operators only, so the same function serves NumPy inputs (`predict`) and
traced JAX arrays (`jax.grad` of a response with respect to the raw video).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.errors import InputDataError

Inputs = dict[str, Any]  # video [B, T, H, W, 1], behavior [B, T, k], pupil_center [B, T, 2], mouse int32 [B]


def check_shapes(card: DatasetCard, video: Any, behavior: Any, pupil_center: Any) -> None:
    """Batched, time-major raw inputs of the card's frame shape and behaviour size."""
    b, t = video.shape[:2]
    expected = {"video": (b, t, *card.frame_shape), "behavior": (b, t, card.behavior_dim), "pupil_center": (b, t, 2)}
    for name, array in (("video", video), ("behavior", behavior), ("pupil_center", pupil_center)):
        if tuple(array.shape) != expected[name]:
            raise InputDataError("predict", name, f"shape {expected[name]} (time-major)", tuple(array.shape))


def pipeline_inputs(card: DatasetCard, video: Any, behavior: Any, pupil_center: Any, mouse: str | int, *,
                    normalize: bool = True) -> Inputs:
    """Recordings of one mouse (video [T, H, W] or [B, T, H, W] in 0-255, behaviour and pupil
    centre in recorded units; already normalized with `normalize=False`) -> the model's inputs
    in the pipeline's layout, always batched.

    Arrays stay of their kind (NumPy in, NumPy out; JAX in, JAX out) and differentiable.
    """
    if video.ndim == 3:
        video, behavior, pupil_center = video[None], behavior[None], pupil_center[None]
    check_shapes(card, video, behavior, pupil_center)
    index = card.index(mouse)
    if normalize:
        m = card.mice[index]
        video = (video - m.video_mean) / m.video_std
        behavior = behavior / m.behavior_scale
        pupil_center = (pupil_center - m.pupil_mean) / m.pupil_std
    return {"video": video[..., None], "behavior": behavior, "pupil_center": pupil_center,
            "mouse": np.full((video.shape[0],), index, np.int32)}
