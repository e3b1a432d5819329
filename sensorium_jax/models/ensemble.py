"""Ensembles trained as one program: the members' states stacked along a leading axis.

Why one program rather than N runs: the members share every batch the input pipeline reads,
one compiled step serves all of them, and on accelerators N small models vmapped together
fill the device better than N runs one after another. The members differ by the random
streams they are built from (split from the run's seed), like the paper's seeds.

Training sums the members' losses, so each member gets exactly its own gradient (Adam and
weight decay act per parameter); prediction is the members' mean.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models.registry import build_model, default_model_config, register_model


def ensemble_config() -> ml_collections.ConfigDict:
    """The paper's ensembled baseline: factorized models from 14 seeds."""
    return ml_collections.ConfigDict({"name": "ensemble", "members": 14, "member": default_model_config("factorized")})


class EnsembleModel(nnx.Module):
    """`model(batch, train)` -> the members' mean prediction [B, T_out, Nmax];
    `model.member_predictions(batch, train)` -> [members, B, T_out, Nmax] (what training uses)."""

    def __init__(self, config: ml_collections.ConfigDict, card: DatasetCard, *, rngs: nnx.Rngs):
        members = int(config.members)
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, got members={members}")
        member_config = config.member
        if member_config.name == "ensemble":
            raise ValueError("ensemble members cannot themselves be ensembles")

        @nnx.split_rngs(splits=members)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(member_rngs: nnx.Rngs) -> nnx.Module:
            return build_model(member_config, card, member_rngs)

        self.members = create(rngs)
        self.n_members = members
        # Static properties of the member architecture (the same for every member).
        self.clip_length = getattr(self.members, "clip_length", None)

    def frames_lost(self, frames: int | None = None) -> int:
        return self.members.frames_lost(frames)

    def frames_out(self, frames: int) -> int:
        return self.members.frames_out(frames)

    def member_predictions(self, batch: Mapping[str, jax.Array], train: bool = False) -> jax.Array:
        @nnx.vmap(in_axes=(0, None), out_axes=0)
        def run(member: nnx.Module, inputs: Mapping[str, jax.Array]) -> jax.Array:
            return member(inputs, train=train)

        return run(self.members, dict(batch))

    def __call__(self, batch: Mapping[str, jax.Array], train: bool = False) -> jax.Array:
        return jnp.mean(self.member_predictions(batch, train), axis=0)

    def readout_positions(self) -> jax.Array | None:
        """The members' mean readout positions [M, Nmax, 2], when the members have them."""
        if not hasattr(getattr(self.members, "readout", None), "positions"):
            return None

        @nnx.vmap(in_axes=0, out_axes=0)
        def positions(member: nnx.Module) -> jax.Array:
            return member.readout.positions()

        return jnp.mean(positions(self.members), axis=0)


@register_model("ensemble", default_config=ensemble_config)
def build_ensemble(config: ml_collections.ConfigDict, card: DatasetCard, rngs: nnx.Rngs) -> EnsembleModel:
    return EnsembleModel(config, card, rngs=rngs)
