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
    return ml_collections.ConfigDict(
        {
            "name": "ensemble",
            "members": 14,
            "member": default_model_config("factorized"),
            # How the members run inside the step: "vmap" (one batched program: convolutions
            # with a stacked kernel become grouped convolutions), "map" (a compiled loop over
            # the members) or "unroll" (the members one after another in the program; compile
            # time grows with their number). "auto": "unroll" on CPU, "vmap" elsewhere.
            # Measured on 2 CPU cores, 4 small factorized members (0.7 s per step alone):
            # vmap 30 s per step (XLA's CPU grouped convolutions are slow), map 54 s
            # (convolutions inside a loop are slow there too).
            "member_loop": "auto",
        }
    )


def resolve_member_loop(loop: str) -> str:
    if loop == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    if loop not in ("vmap", "map", "unroll"):
        raise ValueError(f"member_loop must be 'auto', 'vmap', 'map' or 'unroll', got {loop!r}")
    return loop


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
        self.member_loop = resolve_member_loop(config.get("member_loop", "auto"))
        # Static properties of the member architecture (the same for every member).
        self.clip_length = getattr(self.members, "clip_length", None)

    def frames_lost(self, frames: int | None = None) -> int:
        return self.members.frames_lost(frames)

    def frames_out(self, frames: int) -> int:
        return self.members.frames_out(frames)

    def member_predictions(self, batch: Mapping[str, jax.Array], train: bool = False) -> jax.Array:
        inputs = dict(batch)
        if self.member_loop == "vmap":

            @nnx.vmap(in_axes=(0, None), out_axes=0)
            def run(member: nnx.Module, clip: Mapping[str, jax.Array]) -> jax.Array:
                return member(clip, train=train)

            return run(self.members, inputs)

        graphdef, state = nnx.split(self.members)

        def one(member_state: nnx.State) -> tuple[jax.Array, nnx.State]:
            member = nnx.merge(graphdef, member_state)
            out = member(inputs, train=train)
            return out, nnx.state(member)

        if self.member_loop == "map":
            outputs, new_state = jax.lax.map(one, state)
        else:
            results = [one(jax.tree.map(lambda x, i=i: x[i], state)) for i in range(self.n_members)]
            outputs = jnp.stack([out for out, _ in results])
            new_state = jax.tree.map(lambda *xs: jnp.stack(xs), *[member for _, member in results])
        nnx.update(self.members, new_state)  # BatchNorm statistics and RNG counters move on
        return outputs

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
