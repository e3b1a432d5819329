"""What the static-image (SENSORIUM 2022) models share: the track, 2D convolutions, the frame.

A static trial is one image (the pipeline's clip of T = 1 frame). A static model runs a 2D core
on each frame, reads every neuron out of its feature map with the shared Gaussian readout
(`models.readouts`) and outputs ELU + 1, so it predicts every frame: `frames_lost() == 0`.

The track is ONE config value, `model.track`:

- "stimulus" (SENSORIUM): the core sees the image only; no shifter. Behaviour and pupil centre
  in the batch are ignored.
- "behavior" (SENSORIUM+): the three behaviour variables enter the core as constant input maps
  (scaled as every model here, see `inputs.map_scale`) and the per-mouse shifter moves the
  readout positions by a function of the pupil centre.

Everything else (layers, readout, initialisation) is the same in both tracks.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import base
from sensorium_jax.models.geometry import SpatialLayer, grid_to_pixels
from sensorium_jax.models.inputs import core_input, input_channels, map_scale, pool_frames
from sensorium_jax.models.kernels import padding_pairs
from sensorium_jax.models.readouts import readout_and_shifter

TRACKS = ("stimulus", "behavior")
PADDINGS = ("VALID", "SAME")  # of a stride-1 convolution: none, or kernel // 2 (see kernels.padding_pairs)

_DN2 = ("NHWC", "HWIO", "NHWC")


def check_track(track: str) -> str:
    """`track` if it is one of `TRACKS`; a one-line error naming the field otherwise."""
    if track not in TRACKS:
        raise ValueError(f"model.track = {track!r}: expected one of {', '.join(map(repr, TRACKS))}")
    return track


def track_inputs(track: str) -> ml_collections.ConfigDict:
    """The `inputs` section (`models.inputs`) a track feeds the core: behaviour maps or none.
    The pupil centre never enters as maps: the behaviour track gives it to the shifter."""
    return ml_collections.ConfigDict({"behavior": check_track(track) == "behavior", "pupil_center": False})


def conv2d(x: jax.Array, kernel: jax.Array, padding: str) -> jax.Array:
    """Stride-1 2D convolution of [N, H, W, Ci] by a [k, k, Ci, Co] kernel."""
    pad = [padding_pairs(kernel.shape[0], padding)] * 2
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), pad, dimension_numbers=_DN2)


class StaticCore(nnx.Module, abc.ABC):
    """What a static model needs of its 2D core (images [N, H, W, C] -> maps [N, H', W', C'])."""

    out_channels: int

    @abc.abstractmethod
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Feature maps of a batch of images."""

    @abc.abstractmethod
    def spatial_layers(self) -> tuple[SpatialLayer, ...]:
        """The stride-1 spatial convolutions between the input and the feature map."""

    @abc.abstractmethod
    def regularizer(self) -> jax.Array:
        """The core's penalty in summed-loss units."""


class StaticModel(base.Model):
    """A 2D core per frame, the Gaussian readout (and in the behaviour track the shifter), ELU + 1.

    Subclasses build the core in `build_core`; everything around it is written once here so
    the baseline and the LN model differ only in their cores.
    """

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        if card.kind != "static":
            raise ValueError(f"model {config.name!r} needs static (image) data, the card says {card.kind!r}")
        self.track = check_track(config.track)
        inputs = track_inputs(self.track)
        self.use_behavior = bool(inputs.behavior)
        self.input_pool = int(config.core.input_pool)
        self.map_scale = map_scale(config.inputs.map_scale, self.first_kernel(config))
        self.frame_shape = tuple(int(s) for s in card.frame_shape)
        self.core = self.build_core(config, input_channels(card, inputs), rngs)
        head = ml_collections.ConfigDict({
            "readout": config.readout,
            "shifter": {**config.shifter.to_dict(), "enabled": self.track == "behavior"},
        })
        # assigned once: NNX makes an attribute first set to None static
        self.readout, self.shifter = readout_and_shifter(head, card, self.core.out_channels, rngs)

    @staticmethod
    @abc.abstractmethod
    def first_kernel(config: ml_collections.ConfigDict) -> int:
        """The first convolution's width (the constant maps' scale follows it)."""

    @abc.abstractmethod
    def build_core(self, config: ml_collections.ConfigDict, in_channels: int, rngs: nnx.Rngs) -> StaticCore:
        """The model's 2D core for `in_channels` input maps."""

    def frames_lost(self) -> int:
        """None: every frame (every image) gets its own prediction."""
        return 0

    def regularizer(self) -> jax.Array:
        """The core's penalty plus the readout's L1 on its feature weights."""
        return self.core.regularizer() + self.readout.regularizer()

    def readout_positions(self) -> base.ReadoutPositions:
        """Mean readout positions in screen pixels, through the pooling and the core's convolutions."""
        pixels = grid_to_pixels(self.readout.positions(), self.frame_shape, self.input_pool,
                                self.core.spatial_layers())
        return base.ReadoutPositions(pixels)

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        x = pool_frames(core_input(batch, self.use_behavior, False, self.map_scale), self.input_pool)
        b, t = x.shape[:2]
        maps = self.core(x.reshape(b * t, *x.shape[2:]), train=train)
        features = maps.reshape(b, t, *maps.shape[1:])
        mouse = jnp.asarray(batch["mouse"], jnp.int32)
        shift = None
        if self.shifter is not None:
            shift = self.shifter(jnp.asarray(batch["pupil_center"]), mouse)
        return jax.nn.elu(self.readout(features, mouse, shift, train=train)) + 1.0
