"""CutMix for video clips (Yun et al., 2019), the way DwiseNeuro used it: one box, drawn on
the model's input canvas, is pasted from another clip of the same mouse into every input
channel (video, behaviour and pupil-center maps), and the targets are mixed by the box's share
of the canvas.

Pure and jit-friendly: the partner of each clip is drawn inside the compiled step among the
clips of the same mouse in the (global) batch, so no host work and no extra input pipeline.
Behaviour and pupil are one number per frame until a model turns them into maps, so the batch
carries the box (`cutmix_box`, on the canvas) and the partner's values (`behavior_partner`,
`pupil_center_partner`) for the model to paste (`models.dwiseneuro`); models without maps keep
the receiving clip's behaviour.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def draw_partners(key: jax.Array, mouse: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For each clip, a random other clip of the same mouse: (partner [B], has_partner [B])."""
    b = mouse.shape[0]
    same = (mouse[:, None] == mouse[None, :]) & ~jnp.eye(b, dtype=bool)
    scores = jnp.where(same, jax.random.uniform(key, (b, b)), -1.0)
    return jnp.argmax(scores, axis=1), jnp.any(same, axis=1)


def cutmix_boxes(key: jax.Array, batch: int, height: int, width: int, alpha: float) -> jax.Array:
    """[B, H, W] boolean boxes covering about 1 - lambda of the frame, lambda ~ Beta(alpha, alpha),
    centred uniformly and clipped at the frame's edges (the mixed area is the clipped box's)."""
    k_lam, k_y, k_x = jax.random.split(key, 3)
    lam = jax.random.beta(k_lam, alpha, alpha, (batch,))
    ratio = jnp.sqrt(1.0 - lam)
    half_h = jnp.floor(height * ratio).astype(jnp.int32) // 2
    half_w = jnp.floor(width * ratio).astype(jnp.int32) // 2
    cy = jax.random.randint(k_y, (batch,), 0, height)
    cx = jax.random.randint(k_x, (batch,), 0, width)
    rows = jnp.arange(height)[None, :]
    cols = jnp.arange(width)[None, :]
    in_rows = (rows >= (cy - half_h)[:, None]) & (rows < (cy + half_h)[:, None])
    in_cols = (cols >= (cx - half_w)[:, None]) & (cols < (cx + half_w)[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


CUTMIX_BOX = "cutmix_box"
PARTNER_KEYS = ("behavior", "pupil_center")


def crop_centred(boxes: jax.Array, height: int, width: int) -> jax.Array:
    """The [B, height, width] middle of canvas boxes [B, FH, FW]: where a frame sits when it is
    zero padded (centred) to the canvas, as DwiseNeuro pads."""
    top = (boxes.shape[1] - height) // 2
    left = (boxes.shape[2] - width) // 2
    return boxes[:, top:top + height, left:left + width]


def cutmix(batch: dict, key: jax.Array, *, probability: float, alpha: float,
           canvas: tuple[int, int] | None = None) -> dict:
    """The batch with CutMix applied to each clip with `probability` (clips without a partner of
    the same mouse are left as they are). The box is drawn on `canvas` (the model's padded
    frame; default the video's own size), the video takes the part over its frames, and the
    targets are mixed by the box's share of the canvas."""
    k_partner, k_apply, k_box = jax.random.split(key, 3)
    video = batch["video"]
    b, _, h, w = video.shape[:4]
    ch, cw = (h, w) if canvas is None else (int(canvas[0]), int(canvas[1]))
    if ch < h or cw < w:
        raise ValueError(f"frames of {h}x{w} do not fit the CutMix canvas {ch}x{cw}")
    partner, has_partner = draw_partners(k_partner, batch["mouse"])
    applied = jax.random.bernoulli(k_apply, probability, (b,)) & has_partner
    boxes = cutmix_boxes(k_box, b, ch, cw, alpha) & applied[:, None, None]
    area = jnp.mean(boxes, axis=(1, 2))  # [B], 0 where not applied
    frame_boxes = crop_centred(boxes, h, w)
    mixed_video = jnp.where(frame_boxes[:, None, :, :, None], video[partner], video)
    weight = area[:, None, None].astype(batch["responses"].dtype)
    mixed_responses = (1.0 - weight) * batch["responses"] + weight * batch["responses"][partner]
    frame_mask = batch["frame_mask"].astype(bool)
    mixed_frames = jnp.where(applied[:, None], frame_mask & frame_mask[partner], frame_mask)
    partners = {f"{k}_partner": batch[k][partner] for k in PARTNER_KEYS if k in batch}
    return {**batch, **partners, "video": mixed_video, "responses": mixed_responses, "frame_mask": mixed_frames,
            CUTMIX_BOX: boxes}
