"""The model contract: what every model of the zoo is, written once.

The trainer, the benchmark, inference, evaluation and the plots only ever call what this
class declares; none of them inspects a model for optional attributes. A new model is one
module (`sensorium_jax.models.<name>`, or any importable module named by its dotted path)
that defines

    default_config() -> ml_collections.ConfigDict    # the model's options, as data
    class Model(base.Model): ...                      # Model(config, card, rngs=rngs)

and nothing else has to change (see `sensorium_jax.models.registry`).

Inputs: a batch of the pipeline's layout (channels last, normalized units): `video float32
[B, T, H, W, 1]` (static data: T = 1), `behavior [B, T, k]`, `pupil_center [B, T, 2]`,
`mouse int32 [B]` (the mouse's position in the dataset card). Outputs: positive rates
`[B, T - frames_lost, Nmax]` in normalized response units, aligned with the LAST frames of the
clip; entries past a mouse's own neuron count are padding that losses and metrics mask.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class ReadoutPositions:
    """Where each neuron's readout looks on the screen, or why a model cannot say.

    `pixels` is [mice, Nmax, 2] as (x, y) in screen pixels of the dataset card's frame shape
    (pixel centres at integers); None when the readout has no per-neuron position, with the
    reason in `reason` (shown where a plot would have been).
    """

    pixels: jax.Array | None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.pixels is None and not self.reason:
            raise ValueError("ReadoutPositions without pixels must say why")


class Model(nnx.Module, abc.ABC):
    """Base class of every model: a shared core and per-mouse readouts behind one call.

    Subclasses implement `__call__`, `frames_lost` and `readout_positions`; they override
    `clip_length` when the core needs inputs of one fixed length, and `member_predictions` /
    `n_members` when the model is several models trained together (an ensemble).
    """

    @abc.abstractmethod
    def __call__(self, batch: Batch, train: bool = False) -> jax.Array:
        """Predicted rates [B, T - frames_lost, Nmax] of the clip's last frames."""

    @abc.abstractmethod
    def frames_lost(self) -> int:
        """Frames at the start of any clip that get no prediction (the core's temporal
        receptive field minus one); 0 for causal recurrent or non-causal padded cores."""

    @property
    def clip_length(self) -> int | None:
        """The one input length the core accepts (whole trials are then predicted in
        overlapping windows), or None when any length of at least `frames_lost() + 1` works."""
        return None

    @property
    def pads_start(self) -> bool:
        """Whether whole-trial prediction may put `frames_lost()` copies of a trial's first
        frame before it (a steady screen) so that its first frames get predictions too. A model
        whose outputs attend to the whole clip (non-causal temporal attention, positions counted
        from the clip's first frame) says False: the padding would change every frame's
        prediction, not only the first ones', so its first `frames_lost()` frames are left
        unpredicted (NaN) instead, as in the trainer's validation."""
        return True

    @property
    def input_canvas(self) -> tuple[int, int] | None:
        """The (height, width) the model pads its frames to before its core, where in-step
        augmentations (CutMix) draw their boxes as the reference does; None: the frames' own."""
        return None

    @property
    def n_members(self) -> int:
        """How many independently parameterised models this one trains at once."""
        return 1

    def member_predictions(self, batch: Batch, train: bool = False) -> jax.Array:
        """[n_members, B, T_out, Nmax]: each member's own prediction (training sums their
        losses, so each member gets exactly its own gradient). A single model is one member."""
        return self(batch, train=train)[None]

    def every_mouse_predictions(self, batch: Batch, mice: int, train: bool = False) -> jax.Array:
        """[mice, B, T_out, Nmax]: every mouse's readout of every clip, whoever's clip it is
        (distillation trains the readouts of the mice that did not see a clip on a teacher's
        predictions). This default reads the clips once per mouse in one call of `__call__` on
        the repeated batch (BatchNorm's batch statistics are those of the batch, as repeats do
        not change them); a model whose readouts share one core pass overrides it."""
        b = batch["mouse"].shape[0]
        repeated = {key: jnp.concatenate([value] * mice, axis=0) for key, value in batch.items()}
        repeated["mouse"] = jnp.repeat(jnp.arange(mice, dtype=jnp.int32), b)
        out = self(repeated, train=train)
        return out.reshape(mice, b, *out.shape[1:])

    def regularizer(self) -> jax.Array:
        """Penalty added to the training loss, in the loss's units: the units of a loss summed
        over entries (the reference's); a loss averaged over entries divides it by the same
        count (`losses.LossScale`), so its weight against the data does not depend on the
        reduction. An ensemble's is the sum of its members'. 0 for a model without one."""
        return jnp.zeros((), jnp.float32)

    @abc.abstractmethod
    def readout_positions(self) -> ReadoutPositions:
        """Each neuron's readout position in screen pixels, or None with the reason."""

    def frames_out(self, frames: int) -> int:
        """Frames predicted for a `frames`-long clip."""
        return frames - self.frames_lost()


def mean_members(predictions: jax.Array) -> jax.Array:
    """The prediction of several members: their mean over the leading axis."""
    return jnp.mean(predictions, axis=0)
