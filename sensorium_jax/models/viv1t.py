"""ViV1T (third place of SENSORIUM 2023): a factorized spatiotemporal transformer core with the
Gaussian readout and shifter, from the retrospective (section 6.3, table 3) and the reference
code (github.com/bryanlimy/ViV1T).

Layout (every number comes from the config):

- input: the video with behaviour and pupil center as constant maps (5 channels with 2
  behaviour dimensions), as the reference's `core_behavior_mode=2`;
- tokenizer: every tubelet of `temporal_patch` frames (stride 1) x `spatial_patch`^2 pixels
  (stride `spatial_stride`), unpadded: LayerNorm over the flattened tubelet, linear to
  `emb_dim`, LayerNorm, patch dropout; learned spatial and temporal position embeddings added;
- core: `spatial_depth` parallel transformer blocks attending over the tokens of each frame,
  then `temporal_depth` blocks attending over the frames of each spatial token (heads x
  head_dim attention, GELU MLP, dropout on both, DropPath) -> [B, T', H', W', emb_dim];
- readout: the shared Gaussian readout (positions from cortical coordinates, per-neuron sigma,
  features, bias) and the pupil-driven shifter; the reference adds a per-mouse encoding of the
  frame's behaviour and pupil center to the sampled features (`viv1t_heads.BehaviorEncoder`);
- output: ELU + 1 (the reference's default `output_mode=0`, the baseline's), or exp.

The tokenizer does not pad: the first `temporal_patch - 1` frames of a clip get no prediction
(`frames_lost`), and the outputs align with the clip's last frames as the model contract asks.
As in the reference, the temporal attention is not causal and the temporal positions count
from the clip's first frame, so a frame's prediction depends on the clip it sits in: frames
padded after a trial, or a steady screen put before it, change it. The model therefore says
`pads_start` False: whole trials are predicted as they are (`Predictor.predict` as the
trainer's validation), their first `frames_lost` frames NaN.

Deviations from the reference:
- the readout reads the token grid as it is (H' x W', 15 x 29 for 36 x 64 frames); the
  reference reshapes the tokens to the most square factorisation of their count, the same grid
  for 36 x 64 frames;
- the temporal position embedding is learned for `max_frames - temporal_patch + 1` positions
  and a clip uses its first T' of them; `max_frames` is 320 (the synthetic `full` preset's
  longest trial) where the reference has 300 (the longest 2023 trial): positions past a data
  set's longest trial never train, so on the 2023 data the model computes the reference's
  function with 20 x emb_dim idle parameters;
- the attention is `jax.nn.dot_product_attention` (cuDNN flash attention on GPU) or a plain
  softmax (`transformer.attention`); its dropout acts on the attention output, as the
  reference's does around its fused kernel;
- the tokenizer's default `impl="conv"` computes the reference's tokens without materialising
  the flattened tubelets (see `viv1t_blocks.Tokenizer`); `impl="patches"` builds them;
- the tokenizer's linear layer starts N(0, 0.02^2) with zero bias, as the blocks' layers (the
  reference leaves torch's default U(+-1/sqrt(in)) there; on the tiny preset, smoke-sized with
  4-pixel token strides, the 40-step rise of the validation correlation was 0.083 with this, 0.028 with torch's);
- only the parallel block is offered (the paper's; the reference's default flag builds the
  sequential one) and queries and keys are not normalised (the reference's default).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import base
from sensorium_jax.models.attention import IMPLEMENTATIONS
from sensorium_jax.models.inputs import core_input, input_channels, map_scale
from sensorium_jax.models.readouts import readout_and_shifter
from sensorium_jax.models.remat import run_layer
from sensorium_jax.models.viv1t_blocks import ParallelBlock, PositionEmbedding, Tokenizer, tokens_out
from sensorium_jax.models.viv1t_heads import BehaviorEncoder

OUTPUTS = ("elu1", "exp")


def default_config() -> ml_collections.ConfigDict:
    """Competition-scale configuration: table 3 of the retrospective (the reference's defaults)."""
    return ml_collections.ConfigDict(
        {
            "name": "viv1t",
            # Matmuls, the tokenizer's convolution and attention run in this dtype ("bfloat16"
            # lets cuDNN's flash attention run on GPU); parameters, LayerNorms, the residual
            # stream and the readout stay float32.
            "compute_dtype": "float32",
            # Recompute each transformer block's activations in the backward pass (the
            # reference enables gradient checkpointing on CUDA), ~1/3 more compute.
            "remat": False,
            # The longest clip or trial the model takes: max_frames - temporal_patch + 1
            # temporal positions are learned. 320 covers the synthetic `full` preset's trials
            # as well as the 2023 data's (300, the reference's value).
            "max_frames": 320,
            "inputs": {"behavior": True, "pupil_center": True, "map_scale": 1.0},
            "tokenizer": {
                "temporal_patch": 25,  # temporal stride 1: one token per frame
                "spatial_patch": 7,
                "spatial_stride": 2,
                "emb_dim": 112,
                "dropout": 0.1338,  # patch dropout
                # Initial spread of the learned position embeddings (the reference's randn: 1).
                "position_std": 1.0,
                # The LayerNorm over each flattened tubelet (the reference's). It divides out
                # the tubelet's contrast, which the synthetic neurons' energy responses need:
                # the CPU-sized configs turn it off.
                "patch_norm": True,
                # "conv": tokens without the flattened tubelets (same values, far less
                # memory); "patches": the reference's unfold, LayerNorm, linear.
                "impl": "conv",
            },
            "transformer": {
                "spatial_depth": 3,
                "temporal_depth": 5,
                "heads": 11,
                "head_dim": 48,
                "mlp_dim": 136,
                "attention_dropout": 0.3580,
                "mlp_dropout": 0.0592,
                "drop_path": 0.0505,
                # "fused": jax.nn.dot_product_attention, the backend's choice (cuDNN on GPU);
                # "xla" / "cudnn": forced; "plain": softmax attention written out.
                "attention": "fused",
            },
            "readout": {
                "position_inputs": 2,
                "position_hidden": 30,
                "init_sigma": 1.0,  # the reference draws the full sigma in [-1, 1]
                "full_sigma": True,
                "neuron_chunk": 1024,
                "centered_positions": True,
                "gamma_readout": 0.0,
                # The reference's per-mouse behaviour encoding added to the sampled features.
                "behavior_encoder": True,
                "behavior_dropout": 0.0,
            },
            "shifter": {"enabled": True, "hidden": (5, 5), "zero_init": True},
            "output": "elu1",  # "elu1" (the reference's default) or "exp"
        }
    )


class Core(nnx.Module):
    """[B, T, H, W, C] -> [B, T - temporal_patch + 1, H', W', emb_dim]: tokens, position
    embeddings, spatial blocks per frame, temporal blocks per spatial token."""

    def __init__(self, channels: int, frame_shape: tuple[int, int], config: ml_collections.ConfigDict, *,
                 rngs: nnx.Rngs):
        tk, tf = config.tokenizer, config.transformer
        if tf.attention not in IMPLEMENTATIONS:
            raise ValueError(f"unknown attention {tf.attention!r}; known: {', '.join(IMPLEMENTATIONS)}")
        dt = jnp.dtype(config.compute_dtype)
        self.temporal_patch = int(tk.temporal_patch)
        self.grid = tuple(tokens_out(s, int(tk.spatial_patch), int(tk.spatial_stride)) for s in frame_shape)
        if min(self.grid) < 1:
            raise ValueError(f"frames of {frame_shape} are smaller than the spatial patch {tk.spatial_patch}")
        positions = int(config.max_frames) - self.temporal_patch + 1
        if positions < 1:
            raise ValueError(f"max_frames {config.max_frames} is shorter than the temporal patch")
        emb = int(tk.emb_dim)
        self.tokenizer = Tokenizer(channels, emb, self.temporal_patch, int(tk.spatial_patch), int(tk.spatial_stride),
                                   float(tk.dropout), impl=str(tk.impl), patch_norm=bool(tk.patch_norm),
                                   compute_dtype=dt, rngs=rngs)
        self.positions = PositionEmbedding(positions, *self.grid, emb, std=float(tk.position_std), rngs=rngs)

        def blocks(depth: int) -> nnx.List:
            return nnx.List([
                ParallelBlock(emb, int(tf.heads), int(tf.head_dim), int(tf.mlp_dim),
                              attention_dropout=float(tf.attention_dropout), mlp_dropout=float(tf.mlp_dropout),
                              drop_path=float(tf.drop_path), attention_impl=str(tf.attention), compute_dtype=dt,
                              rngs=rngs)
                for _ in range(depth)
            ])

        self.spatial_blocks = blocks(int(tf.spatial_depth))
        self.temporal_blocks = blocks(int(tf.temporal_depth))
        self.remat = bool(config.remat)
        self.out_channels = emb

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        tokens = self.positions(self.tokenizer(x, train=train))  # [B, T', H', W', E]
        b, t, h, w, e = tokens.shape
        seq = tokens.reshape(b * t, h * w, e)  # attend across space, frame by frame
        for block in self.spatial_blocks:
            seq = run_layer(block, seq, train=train, remat=self.remat)
        seq = seq.reshape(b, t, h * w, e).transpose(0, 2, 1, 3).reshape(b * h * w, t, e)  # then across time
        for block in self.temporal_blocks:
            seq = run_layer(block, seq, train=train, remat=self.remat)
        return seq.reshape(b, h, w, t, e).transpose(0, 3, 1, 2, 4)


class ViV1TModel(base.Model):
    """`model(batch, train)` -> positive rates [B, T - temporal_patch + 1, Nmax]."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        if card.kind != "video":
            raise ValueError(f"ViV1T needs video data, the card says {card.kind!r}")
        if config.output not in OUTPUTS:
            raise ValueError(f"unknown output {config.output!r}; known: {', '.join(OUTPUTS)}")
        inputs = config.inputs
        self.use_behavior = bool(inputs.behavior)
        self.use_pupil = bool(inputs.pupil_center)
        self.map_scale = map_scale(inputs.map_scale, int(config.tokenizer.spatial_patch))
        self.frame_shape = tuple(int(s) for s in card.frame_shape)
        self.spatial_patch = int(config.tokenizer.spatial_patch)
        self.spatial_stride = int(config.tokenizer.spatial_stride)
        self.output = str(config.output)
        self.max_frames = int(config.max_frames)
        self.core = Core(input_channels(card, inputs), self.frame_shape, config, rngs=rngs)
        self.readout, self.shifter = readout_and_shifter(config, card, self.core.out_channels, rngs)
        if self.output == "exp":  # biases start at the log mean rate, as inverse_elu1 does for ELU + 1
            means = np.zeros(self.readout.bias.shape, np.float32)
            for i, m in enumerate(card.mice):
                means[i, : m.n_neurons] = np.log(np.maximum(np.asarray(m.mean_response, np.float64), 1e-3))
            self.readout.bias[...] = jnp.asarray(means)
        self.behavior_encoder = nnx.data(None)
        if config.readout.behavior_encoder:
            self.behavior_encoder = BehaviorEncoder(len(card.mice), card.behavior_dim + 2, self.core.out_channels,
                                                    float(config.readout.behavior_dropout), rngs=rngs)

    def frames_lost(self) -> int:
        """The tokenizer's unpadded temporal patch eats its length minus one."""
        return self.core.temporal_patch - 1

    @property
    def pads_start(self) -> bool:
        """False: the temporal attention sees the whole clip, so frames put before a trial
        would change every frame's prediction."""
        return False

    def regularizer(self) -> jax.Array:
        return self.readout.regularizer()

    def readout_positions(self) -> base.ReadoutPositions:
        """Mean readout positions in screen pixels: token (i, j) is centred on pixel
        (stride * i + (patch - 1) / 2, stride * j + (patch - 1) / 2)."""
        grid = self.readout.positions()
        h, w = self.core.grid
        offset = (self.spatial_patch - 1) / 2
        x = (grid[..., 0] + 1) / 2 * (w - 1) * self.spatial_stride + offset
        y = (grid[..., 1] + 1) / 2 * (h - 1) * self.spatial_stride + offset
        return base.ReadoutPositions(jnp.stack([x, y], axis=-1))

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        x = core_input(batch, self.use_behavior, self.use_pupil, self.map_scale)
        t_out = self.frames_out(x.shape[1])
        if t_out < 1:
            raise ValueError(f"{x.shape[1]}-frame clips are too short: the tokenizer eats {self.frames_lost()}")
        if x.shape[1] > self.max_frames:
            raise ValueError(f"{x.shape[1]}-frame clips exceed model.max_frames={self.max_frames} (the learned "
                             "temporal positions): train with a larger model.max_frames")
        features = self.core(x, train=train)
        mouse = jnp.asarray(batch["mouse"], jnp.int32)
        pupil = jnp.asarray(batch["pupil_center"], jnp.float32)[:, -t_out:]
        shift = None if self.shifter is None else self.shifter(pupil, mouse)
        out = self.readout(features, mouse, shift, train=train)
        if self.behavior_encoder is not None:
            states = jnp.concatenate([jnp.asarray(batch["behavior"], jnp.float32)[:, -t_out:], pupil], axis=-1)
            encoded = self.behavior_encoder(states, mouse, train=train)  # [B, T', C]
            out = out + jnp.einsum("btc,bnc->btn", encoded, self.readout.features[...][mouse])
        return jnp.exp(out) if self.output == "exp" else jax.nn.elu(out) + 1.0


Model = ViV1TModel
