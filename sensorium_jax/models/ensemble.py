"""Ensembles as one program: independent runs that share one compiled step.

Member k is the single model of the member config trained by a separate run with seed
`seed + k` (`member_seeds`; with the default seed 0, member k is the run with seed k): it is
initialised as that run's model (built alone from `nnx.Rngs(seed + k)`, then the members' states
are stacked along a leading axis), reads that run's batches, and the trainer gives it that
run's augmentation keys, plateau schedule, early stop and best parameters (`training.loop`).
Prediction is the members' mean, each with its own best parameters.

Why one program rather than N runs: one compiled step serves all members, and on accelerators
N small models vmapped together fill the device better than N runs one after another.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import base, kernels, legacy
from sensorium_jax.models.registry import build_model, default_model_config


def default_config() -> ml_collections.ConfigDict:
    """The paper's ensembled baseline: factorized models from 14 seeds."""
    return ml_collections.ConfigDict(
        {
            "name": "ensemble",
            "members": 14,
            "member": default_model_config("factorized"),
            # How the members run (see sensorium_jax.models.kernels), and the form of every
            # member's kernels (it replaces the member config's own `kernels`): "native" (one
            # vmapped program), "folded" / "matmul" (the members one after another in the
            # program; compile time grows with their number) or "auto" (folded on CPU, else
            # native).
            "kernels": "auto",
        }
    )


def is_ensemble(model_config: ml_collections.ConfigDict) -> bool:
    return model_config.name == "ensemble"


def member_seeds(seed: int, members: int) -> list[int]:
    """The seed rule: member k is the separate run with seed `seed + k`."""
    return [int(seed) + k for k in range(int(members))]


def member_run_config(config: ml_collections.ConfigDict, k: int) -> ml_collections.ConfigDict:
    """The config of the separate single-model run that member k of `config`'s ensemble is."""
    single = config.copy_and_resolve_references()
    ensemble = single.model
    single.model = ensemble.member.copy_and_resolve_references()
    with single.model.unlocked():
        single.model.kernels = ensemble.kernels
    single.seed = member_seeds(config.seed, ensemble.members)[k]
    return single


def build_for_run(model_config: ml_collections.ConfigDict, card: DatasetCard, seed: int) -> "EnsembleModel":
    """The ensemble whose member k is the model a run with seed `seed + k` starts from
    (`build_model` with the run's seed; the legacy upgrade and `kernels` resolved as there)."""
    config = legacy.upgrade(model_config, default_config())
    config.kernels = kernels.resolve(config.kernels)
    return EnsembleModel(config, card, rngs=nnx.Rngs(seed), seed=seed)


def stack_states(states: Sequence[nnx.State]) -> nnx.State:
    """One state whose leaves stack the members' along a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def member_slice(tree, k: int):
    """Member k's part of a tree of stacked leaves."""
    return jax.tree.map(lambda x: x[k], tree)


class OneMember(base.Model):
    """One member as a model of its own, under the ensemble's attribute name, so that its state
    tree is a slice of the ensemble's: `nnx.merge(member_graph, member_slice(params, k), ...)`
    is member k (validation scores each member alone this way)."""

    def __init__(self, member: base.Model):
        self.members = member

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        return self.members(batch, train=train)

    @property
    def input_canvas(self) -> tuple[int, int] | None:
        return self.members.input_canvas

    @property
    def pads_start(self) -> bool:
        return self.members.pads_start

    def frames_lost(self) -> int:
        return self.members.frames_lost()

    @property
    def clip_length(self) -> int | None:
        return self.members.clip_length

    def regularizer(self) -> jax.Array:
        return self.members.regularizer()

    def readout_positions(self) -> base.ReadoutPositions:
        return self.members.readout_positions()


class EnsembleModel(base.Model):
    """`model(batch, train)` -> the members' mean prediction [B, T_out, Nmax];
    `model.member_predictions(batch, train)` -> [members, B, T_out, Nmax].

    With `seed`, member k is built from `nnx.Rngs(seed + k)` (what a run with that seed builds);
    without (a model built by `build_model`, e.g. abstractly to restore a checkpoint), member k
    is built from its own stream split from `rngs`.
    """

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs,
                 seed: int | None = None):
        members = int(config.members)
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, got members={members}")
        if config.member.name == "ensemble":
            raise ValueError("ensemble members cannot themselves be ensembles")
        self.kernels = kernels.check(config.kernels)
        member_config = config.member.copy_and_resolve_references()
        with member_config.unlocked():
            member_config.kernels = self.kernels  # the ensemble's resolved form, for every member
        if seed is None:
            streams = [nnx.Rngs(jax.random.fold_in(rngs.params(), k)) for k in range(members)]
        else:
            streams = [nnx.Rngs(s) for s in member_seeds(seed, members)]
        built = [build_model(member_config, card, stream) for stream in streams]
        graphdef, _ = nnx.split(built[0])
        self.members = nnx.merge(graphdef, stack_states([nnx.state(m) for m in built]))
        self.member_count = members

    @property
    def n_members(self) -> int:
        return self.member_count

    @property
    def clip_length(self) -> int | None:
        """The members' (one architecture, so one value)."""
        return self.members.clip_length

    @property
    def input_canvas(self) -> tuple[int, int] | None:
        """The members' (one architecture, so one value)."""
        return self.members.input_canvas

    @property
    def pads_start(self) -> bool:
        """The members' (one architecture, so one value)."""
        return self.members.pads_start

    def frames_lost(self) -> int:
        return self.members.frames_lost()

    def member_graph(self) -> nnx.GraphDef:
        """The graph of `OneMember`, split (nnx.Param, ...) like the ensemble: merged with
        member k's slice of the ensemble's parameters and rest, it is member k alone."""
        graphdef, state = nnx.split(self.members)
        one = OneMember(nnx.merge(graphdef, member_slice(state, 0)))
        return nnx.split(one, nnx.Param, ...)[0]

    def member_predictions(self, batch: base.Batch, train: bool = False) -> jax.Array:
        def call(member: nnx.Module, clip: base.Batch) -> jax.Array:
            return member(clip, train=train)

        return kernels.run_members(self.members, call, dict(batch), self.member_count, self.kernels)

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        return base.mean_members(self.member_predictions(batch, train))

    def regularizer(self) -> jax.Array:
        """The sum of the members' penalties: each member's gradient gets exactly its own."""

        @nnx.vmap(in_axes=0, out_axes=0)
        def each(member: nnx.Module) -> jax.Array:
            return member.regularizer()

        return jnp.sum(each(self.members))

    def readout_positions(self) -> base.ReadoutPositions:
        """The members' mean readout positions in pixels, or the members' reason for none."""
        graphdef, state = nnx.split(self.members)
        found = [nnx.merge(graphdef, member_slice(state, i)).readout_positions() for i in range(self.member_count)]
        if found[0].pixels is None:
            return base.ReadoutPositions(None, f"ensemble members: {found[0].reason}")
        return base.ReadoutPositions(jnp.mean(jnp.stack([f.pixels for f in found]), axis=0))


Model = EnsembleModel
