"""Ensembles trained as one program: the members' states stacked along a leading axis.

Why one program rather than N runs: the members share every batch the input pipeline reads,
one compiled step serves all of them, and on accelerators N small models vmapped together
fill the device better than N runs one after another. The members differ by the random
streams they are built from (split from the run's seed), like the paper's seeds.

Training sums the members' losses, so each member gets exactly its own gradient (Adam and
weight decay act per parameter); prediction is the members' mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import base, kernels
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


class EnsembleModel(base.Model):
    """`model(batch, train)` -> the members' mean prediction [B, T_out, Nmax];
    `model.member_predictions(batch, train)` -> [members, B, T_out, Nmax] (what training uses)."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        members = int(config.members)
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, got members={members}")
        if config.member.name == "ensemble":
            raise ValueError("ensemble members cannot themselves be ensembles")
        self.kernels = kernels.check(config.kernels)
        member_config = config.member.copy_and_resolve_references()
        with member_config.unlocked():
            member_config.kernels = self.kernels  # the ensemble's resolved form, for every member

        @nnx.split_rngs(splits=members)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(member_rngs: nnx.Rngs) -> nnx.Module:
            return build_model(member_config, card, member_rngs)

        self.members = create(rngs)
        self.member_count = members

    @property
    def n_members(self) -> int:
        return self.member_count

    @property
    def clip_length(self) -> int | None:
        """The members' (one architecture, so one value)."""
        return self.members.clip_length

    def frames_lost(self) -> int:
        return self.members.frames_lost()

    def member_predictions(self, batch: base.Batch, train: bool = False) -> jax.Array:
        def call(member: nnx.Module, clip: base.Batch) -> jax.Array:
            return member(clip, train=train)

        return kernels.run_members(self.members, call, dict(batch), self.member_count, self.kernels)

    def __call__(self, batch: base.Batch, train: bool = False) -> jax.Array:
        return base.mean_members(self.member_predictions(batch, train))

    def readout_positions(self) -> base.ReadoutPositions:
        """The members' mean readout positions in pixels, or the members' reason for none."""
        graphdef, state = nnx.split(self.members)
        found = [
            nnx.merge(graphdef, jax.tree.map(lambda x, i=i: x[i], state)).readout_positions()
            for i in range(self.member_count)
        ]
        if found[0].pixels is None:
            return base.ReadoutPositions(None, f"ensemble members: {found[0].reason}")
        return base.ReadoutPositions(jnp.mean(jnp.stack([f.pixels for f in found]), axis=0))


Model = EnsembleModel
