"""Dynamic-V1FM (second place of SENSORIUM 2023) as an NNX module, from the retrospective
(section 6.2, appendix A.2) and the reference code (github.com/zhuyu-cs/Dynamic-VFM).

Layout (every number comes from the config; competition values in brackets):

- core (`swin3d.SwinCore`): the video alone (1 channel) cut into (2, 2, 2) patches -> [224]
  channels + LayerNorm; [4] blocks of 3D window attention ([4] heads, window [(8, 7, 7)],
  shift [(4, 3, 3)] in [every] block, relative position bias) and a SwiGLU MLP ([488] hidden)
  with a depthwise 3x3x3 convolution; each block first adds a behaviour MLP's embedding of
  behaviour and pupil centre (per frame 4 -> 112 -> 112, tanh; a token's two frames
  concatenated to 224 channels);
- readout per mouse (`hierarchical_readout`): the hierarchical Gaussian readout at levels
  [(1, 2, 4, 8, 16)] of the neuron axis, positions predicted from cortical coordinates (MLP
  2 -> 32 -> 2, ELU, tanh), full 2x2 sigma [0.2], a shifter (pupil centre -> shift, 2 -> 16
  -> 16 -> 2, tanh) and [adaptive] or mean fusion; ELU + 1.

Frames: the patch embedding halves time, so a clip of T frames has T / 2 token frames, and
the reference has no temporal upsampling: token frame j (clip frames 2j, 2j + 1) is trained
against clip frame T / 2 + j, i.e. the outputs are the clip's last T / 2 frames (30-frame
clips against their last 15 responses; trials submitted in windows stepped by 15). That is
`temporal_output="last_half"` (frames_lost = T / 2); the attention has to carry each frame's
drive from the tokens that saw it to the token that reports it. `temporal_output="repeat"`
instead gives each token frame's readout to both of its own frames (every frame predicted,
frames_lost 0; per-frame shifts still apply); it learns far faster on small budgets (see
configs/dynamic_v1fm.py). The clip length is fixed (`clip_length`); whole trials are
predicted in windows (`windows.predict_frames`).

Deviations from the reference: the readout starts every position at the screen centre and
the shifter at zero (`centered_positions`, `shifter.zero_init`; the reference draws both at
random), as the other models here do; a window dimension shorter than the window uses the
correct relative positions of its smaller window (the reference slices the full window's
index table, which mislabels pairs; at competition size no dimension is that short); no
dropout or drop path (both 0 in the reference config); its padded-token, mask and fusion
details are kept (see `swin3d` and `hierarchical_readout`); the neuron biases start where
ELU + 1 gives the mean rate (`readouts.inverse_elu1`; the reference sets them to the mean).
Where the paper and the code differ, the code is followed: the paper speaks of Layer Norms
in every block and Swin alternates shifted and plain windows, the code has no norm inside its
blocks and shifts in all of them (`core.pre_norm` and `core.shifted_blocks="alternate"` give
the other readings).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import base
from sensorium_jax.models.hierarchical_readout import HierarchicalGaussianReadout
from sensorium_jax.models.shifter import MLPShifter
from sensorium_jax.models.swin3d import SwinCore

TEMPORAL_OUTPUTS = ("last_half", "repeat")


def default_config() -> ml_collections.ConfigDict:
    """Competition-scale configuration (the reference's `config/neuroencoding.py`)."""
    return ml_collections.ConfigDict(
        {
            "name": "dynamic_v1fm",
            # Matrix products, attention and convolutions run in this dtype; parameters,
            # LayerNorms and the readout stay float32.
            "dtype": "float32",  # or "bfloat16"
            "clip_length": 30,  # the one input length (a multiple of core.patch[0])
            # "last_half": token frame j predicts clip frame T / patch_t * (patch_t - 1) + j
            # (the reference's: the last T / 2 frames); "repeat": each token frame's
            # prediction for its own patch_t frames (every frame predicted).
            "temporal_output": "last_half",
            "window_inference": "centred",  # how whole trials are predicted (see models.windows)
            # How the MLPs' depthwise convolutions run (sensorium_jax.models.kernels): "auto" is
            # the native grouped convolution on accelerators and shifted multiply-adds on CPU,
            # where XLA's grouped 3D convolution is ~100x slower.
            "kernels": "auto",
            "inputs": {"behavior": True, "pupil_center": True},  # into the behaviour MLPs
            "core": {
                "patch": (2, 2, 2),  # (frames, rows, columns) per token
                "dim": 224,
                "embed_norm": True,  # LayerNorm after the patch embedding (the reference's)
                "blocks": 4,
                "heads": 4,
                "window": (8, 7, 7),
                "shift": (4, 3, 3),
                # "all": every block shifts its windows (the reference code); "alternate":
                # blocks 1, 3, ... (Swin's).
                "shifted_blocks": "all",
                "mlp_hidden": 488,
                # `models.attention` implementation: "fused" (the backend's kernel: cuDNN flash
                # attention on GPU in bfloat16), "xla", "cudnn" or "plain" (written out).
                "attention": "fused",
                "pre_norm": False,  # LayerNorm before attention and MLP (Swin); the reference has none
                # Recompute each block in the backward pass, one block at a time
                # (`remat.recompute_in_backward`): a block's attention maps ([windows, heads,
                # 392, 392] per clip, float32 logits even in bfloat16) dominate a step's memory.
                # Compiled step of the recipe (32 clips x 30 frames, 10 mice, 78,853 neurons),
                # XLA:CPU temporaries: 64 GiB float32 / 57 GiB bfloat16 without, 17 / 15 GiB with.
                "remat": False,
            },
            "readout": {
                "levels": (1, 2, 4, 8, 16),  # neuron-axis resolutions N / k (1 alone: plain Gaussian)
                "fusion": "adaptive",  # or "mean"
                "refine_hidden_per_level": 16,  # level k's scalar MLP has 16 k hidden units
                "position_inputs": 2,
                "position_hidden": 32,
                "init_sigma": 0.2,
                "full_sigma": True,
                # Neurons per group in the sampling step, each group recomputed in the backward
                # pass (`readouts.sample_and_weigh`): 1024 keeps a group's sampled corners at
                # 1.8 GB for 32 clips x 15 frames x 224 channels.
                "neuron_chunk": 1024,
                "centered_positions": True,
                "gamma_readout": 0.0,  # the reference's loss has no readout penalty
            },
            "shifter": {"enabled": True, "hidden": (16, 16), "zero_init": True},
        }
    )


class DynamicV1FMModel(base.Model):
    """`model(batch, train)` -> positive rates [B, frames_out(clip_length), Nmax] for clips of
    exactly `clip_length` frames."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        if card.kind != "video":
            raise ValueError(f"Dynamic-V1FM needs video data, the card says {card.kind!r}")
        if config.temporal_output not in TEMPORAL_OUTPUTS:
            raise ValueError(f"temporal_output must be one of {', '.join(TEMPORAL_OUTPUTS)}, "
                             f"got {config.temporal_output!r}")
        self.fixed_length = int(config.clip_length)
        self.patch = tuple(int(p) for p in config.core.patch)
        if self.fixed_length % self.patch[0]:
            raise ValueError(f"clip_length {self.fixed_length} is not a multiple of the patch's "
                             f"{self.patch[0]} frames")
        self.temporal_output = str(config.temporal_output)
        self.use_behavior, self.use_pupil = bool(config.inputs.behavior), bool(config.inputs.pupil_center)
        behaviour_inputs = card.behavior_dim * self.use_behavior + 2 * self.use_pupil
        self.frame_shape = tuple(int(s) for s in card.frame_shape)
        self.core = SwinCore(config.core, behaviour_inputs, dtype=jnp.dtype(config.dtype), kernels=config.kernels,
                             rngs=rngs)
        ro = config.readout
        self.readout = HierarchicalGaussianReadout(
            card, self.core.out_channels, levels=tuple(ro.levels), fusion=ro.fusion,
            refine_hidden_per_level=int(ro.refine_hidden_per_level), position_inputs=ro.position_inputs,
            position_hidden=ro.position_hidden, init_sigma=ro.init_sigma, full_sigma=ro.full_sigma,
            neuron_chunk=ro.neuron_chunk, centered_positions=bool(ro.centered_positions),
            gamma_readout=float(ro.gamma_readout), rngs=rngs,
        )
        self.shifter = (MLPShifter(len(card.mice), tuple(config.shifter.hidden),
                                   zero_init=bool(config.shifter.zero_init), rngs=rngs)
                        if config.shifter.enabled else None)

    @property
    def clip_length(self) -> int:
        return self.fixed_length

    def frames_lost(self) -> int:
        """"last_half": the clip's first T - T / patch_t frames; "repeat": none."""
        if self.temporal_output == "repeat":
            return 0
        return self.fixed_length - self.fixed_length // self.patch[0]

    def regularizer(self) -> jax.Array:
        return self.readout.regularizer()

    def readout_positions(self) -> base.ReadoutPositions:
        """Mean positions in screen pixels: the token map spans the (end-padded) frame, so the
        grid's [-1, 1] runs from the first to the last token centre, patch pixels apart."""
        grid = self.readout.positions()
        ph, pw = self.patch[1:]
        h, w = self.frame_shape
        rows, cols = -(-h // ph), -(-w // pw)
        x = (grid[..., 0] + 1.0) * 0.5 * (cols - 1) * pw + (pw - 1) / 2
        y = (grid[..., 1] + 1.0) * 0.5 * (rows - 1) * ph + (ph - 1) / 2
        return base.ReadoutPositions(jnp.stack([x, y], axis=-1))

    def _behaviour(self, batch: base.Batch) -> jax.Array | None:
        parts = [jnp.asarray(batch[k], jnp.float32) for k, used in
                 (("behavior", self.use_behavior), ("pupil_center", self.use_pupil)) if used]
        return jnp.concatenate(parts, axis=-1) if parts else None

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        frames = batch["video"].shape[1]
        if frames != self.fixed_length:
            raise ValueError(f"Dynamic-V1FM takes clips of exactly {self.fixed_length} frames, got {frames}")
        tokens = self.core(jnp.asarray(batch["video"], jnp.float32), self._behaviour(batch))  # [B, T', h, w, C]
        if self.temporal_output == "repeat":
            tokens = jnp.repeat(tokens, self.patch[0], axis=1)
        t_out = tokens.shape[1]
        mouse = jnp.asarray(batch["mouse"], jnp.int32)
        shift = None
        if self.shifter is not None:
            shift = self.shifter(jnp.asarray(batch["pupil_center"])[:, -t_out:], mouse)
        return jax.nn.elu(self.readout(tokens, mouse, shift, train=train)) + 1.0


Model = DynamicV1FMModel
