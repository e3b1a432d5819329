"""Raw recordings -> the model's normalized, pipeline-layout inputs.

Written with array operators only, so the same function serves NumPy inputs (`predict`) and
traced JAX arrays (`jax.grad` of a response with respect to the raw video).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from sensorium_jax.data import normalization as norm_lib
from sensorium_jax.data.card import DatasetCard
from sensorium_jax.errors import InputDataError

Inputs = dict[str, Any]  # video [B, T, H, W, 1], behavior [B, T, k], pupil_center [B, T, 2], mouse int32 [B]


WHERE = "predict"  # what input errors name: the caller's arrays, not a file


def mouse_index(card: DatasetCard, mouse: str | int) -> int:
    """The card's index of a mouse given by name (or index); one line listing the known mice."""
    known = ", ".join(card.names)
    if isinstance(mouse, (int, np.integer)) and not isinstance(mouse, bool):
        if not 0 <= int(mouse) < len(card.mice):
            raise InputDataError(WHERE, "mouse", f"an index 0..{len(card.mice) - 1} or one of the model's mice "
                                 f"({known})", int(mouse))
        return int(mouse)
    if mouse not in card.names:
        raise InputDataError(WHERE, "mouse", f"one of the model's mice ({known})", repr(mouse))
    return card.names.index(mouse)


def check_shapes(card: DatasetCard, video: Any, behavior: Any, pupil_center: Any) -> None:
    """One trial (video [T, H, W], behavior [T, k], pupil_center [T, 2]) or a batch of them
    ([B, T, ...]), of the card's frame shape and behaviour size, with equal B and T."""
    h, w = card.frame_shape
    if np.ndim(video) not in (3, 4) or tuple(np.shape(video)[-2:]) != (h, w):
        raise InputDataError(WHERE, "video", f"[T, H, W] or [B, T, H, W] with H, W = {h}, {w} (the model's "
                             f"frames, time-major)", f"shape {tuple(np.shape(video))}")
    lead = tuple(np.shape(video)[:-2])  # (T,) or (B, T)
    axes = "[T, {}]" if len(lead) == 1 else "[B, T, {}]"
    for name, array, width in (("behavior", behavior, card.behavior_dim), ("pupil_center", pupil_center, 2)):
        shape = tuple(np.shape(array))
        if len(shape) != len(lead) + 1 or shape[-1] != width:
            raise InputDataError(WHERE, name, f"{axes.format(width)} like the video's {list(lead) + ['H', 'W']}",
                                 f"shape {shape}")
        if shape[-2] != lead[-1]:
            raise InputDataError(WHERE, name, f"{lead[-1]} frames (the video's)", f"{shape[-2]} frames")
        if len(lead) == 2 and shape[0] != lead[0]:
            raise InputDataError(WHERE, name, f"{lead[0]} trials (the video's)", f"{shape[0]} trials")


def check_image_shapes(card: DatasetCard, images: Any, behavior: Any, pupil_center: Any) -> None:
    """Static (image) models: one image ([H, W], behavior [k], pupil_center [2]) or a batch
    ([B, H, W], [B, k], [B, 2]) of the card's image shape and behaviour size, with equal B."""
    h, w = card.frame_shape
    if np.ndim(images) not in (2, 3) or tuple(np.shape(images)[-2:]) != (h, w):
        raise InputDataError(WHERE, "images", f"[H, W] or [B, H, W] with H, W = {h}, {w} (the model's images)",
                             f"shape {tuple(np.shape(images))}")
    lead = tuple(np.shape(images)[:-2])  # () or (B,)
    for name, array, width in (("behavior", behavior, card.behavior_dim), ("pupil_center", pupil_center, 2)):
        shape = tuple(np.shape(array))
        expected = f"[{width}] (one image)" if not lead else f"[B, {width}] (one row per image)"
        if len(shape) != len(lead) + 1 or shape[-1] != width:
            images_shape = ", ".join([*map(str, lead), "H", "W"])
            raise InputDataError(WHERE, name, f"{expected} for images of shape [{images_shape}]", f"shape {shape}")
        if lead and shape[0] != lead[0]:
            raise InputDataError(WHERE, name, f"{lead[0]} rows (one per image)", f"{shape[0]} rows")


def images_as_trials(card: DatasetCard, images: Any, behavior: Any, pupil_center: Any) -> tuple[Any, Any, Any]:
    """Static inputs (see `check_image_shapes`) -> one-frame trials (video [B, 1, H, W],
    behavior [B, 1, k], pupil_center [B, 1, 2]): a static model is trained on clips of T = 1."""
    check_image_shapes(card, images, behavior, pupil_center)
    check_finite(images=images, behavior=behavior, pupil_center=pupil_center)
    if np.ndim(images) == 2:
        images, behavior, pupil_center = images[None], behavior[None], pupil_center[None]
    return images[:, None], behavior[:, None], pupil_center[:, None]


def check_finite(**arrays: Any) -> None:
    """Refuses NaN/inf in concrete inputs (one NaN pixel would silently turn output frames
    into NaN); traced arrays (under jit or grad) are left to the caller."""
    for name, array in arrays.items():
        if isinstance(array, jax.core.Tracer):
            continue
        values = np.asarray(array)
        if np.issubdtype(values.dtype, np.inexact) and not np.isfinite(values).all():
            nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
            found = ", ".join(f"{count} {label}" for count, label in ((nan, "NaN"), (inf, "inf")) if count)
            raise InputDataError(WHERE, name, "finite values", found)


def pipeline_inputs(card: DatasetCard, video: Any, behavior: Any, pupil_center: Any, mouse: str | int, *,
                    normalize: bool = True) -> Inputs:
    """Recordings of one mouse (video [T, H, W] or [B, T, H, W] in 0-255, behaviour and pupil
    centre in recorded units; already normalized with `normalize=False`) -> the model's inputs
    in the pipeline's layout, always batched, normalized as the model was trained (the card's
    mode: a trial starts at frame 0 of per-frame statistics, and may not be longer than them).

    Arrays stay of their kind (NumPy in, NumPy out; JAX in, JAX out) and differentiable.
    """
    check_shapes(card, video, behavior, pupil_center)
    check_finite(video=video, behavior=behavior, pupil_center=pupil_center)
    index = mouse_index(card, mouse)
    if video.ndim == 3:
        video, behavior, pupil_center = video[None], behavior[None], pupil_center[None]
    norm = norm_lib.from_card(card.mice[index])
    if normalize and norm.applied:
        norm = norm.window(0, video.shape[1], where=WHERE)
        video = (video - norm.video_mean) / norm.video_std
        behavior = behavior * norm.behavior_precision
        pupil_center = (pupil_center - norm.pupil_mean) / norm.pupil_std
    return {"video": video[..., None], "behavior": behavior, "pupil_center": pupil_center,
            "mouse": np.full((video.shape[0],), index, np.int32)}
