"""Parameter counts of the model zoo at competition scale, next to the paper's figures.

    python benchmarks/param_counts.py [--mice 10] [--neurons 78853] [--static_mice 7] [--static_neurons 28000]

Models are built abstractly (`nnx.eval_shape`): nothing is allocated, so this runs anywhere in
seconds. Video models get a card of the SENSORIUM 2023 shape: 10 mice, 78,853 neurons in all,
36 x 64 frames, 2 behaviour dimensions; static (2022) models one of the 2022 release's: seven
mice, "more than 28,000 neurons" (its paper), 36 x 64 images, 3 behaviour dimensions.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from sensorium_jax.config import load_config
from sensorium_jax.data.card import DatasetCard, MouseCard
from sensorium_jax.models import build_model

REPO = Path(__file__).resolve().parents[1]

# What the SENSORIUM 2023 retrospective says about each model's size.
PAPER = {
    "factorized_baseline": "~10.6M (ViV1T's 12M is 'about 13% more than the factorized baseline')",
    "gru_baseline": "not stated (rotation-equivariant core, 8 channels x 8 rotations, GRU 64 ch 9x9)",
    "ensemble_baseline": "14 x the factorized baseline",
    "dwiseneuro": "not stated (cortex widening to 4096, grouped 1x1 readouts)",
    "viv1t": "12M in all, 'about 13% more than the factorized baseline' (appendix A.3)",
    "dynamic_v1fm": "not stated (core 2.27M; five-level readouts)",
}
# Static (SENSORIUM 2022) configs: (config file, variant) -> what the 2022 paper says.
STATIC_PAPER = {
    ("static_baseline", ""): "not stated (4-layer core, 64 channels)",
    ("static_baseline", "ln"): "not stated (one linear layer)",
}


def competition_card(mice: int, neurons: int, kind: str = "video") -> DatasetCard:
    counts = np.full(mice, neurons // mice)
    counts[: neurons % mice] += 1
    behavior = 2 if kind == "video" else 3
    rng = np.random.default_rng(0)
    cards = tuple(
        MouseCard(
            name=f"mouse{i}", unit_ids=np.arange(n), coordinates=rng.uniform(0, 500, (n, 3)).astype(np.float32),
            mean_response=np.ones(n, np.float32), response_scale=np.ones(n, np.float32), video_mean=0.0,
            video_std=1.0, behavior_scale=np.ones(behavior, np.float32), pupil_mean=np.zeros(2, np.float32),
            pupil_std=np.ones(2, np.float32),
        )
        for i, n in enumerate(counts)
    )
    return DatasetCard(mice=cards, frame_shape=(36, 64), behavior_dim=behavior, kind=kind)


def count_by_part(model: nnx.Module) -> dict[str, int]:
    """Trainable scalars per top-level submodule (an ensemble's per member, times members)."""
    params = nnx.state(model, nnx.Param)
    parts: dict[str, int] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        part = keys[1] if keys[0] == "members" and len(keys) > 1 else keys[0]
        parts[part] = parts.get(part, 0) + int(math.prod(leaf.shape))
    return parts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mice", type=int, default=10)
    parser.add_argument("--neurons", type=int, default=78_853)
    parser.add_argument("--static_mice", type=int, default=7)
    parser.add_argument("--static_neurons", type=int, default=28_000)
    args = parser.parse_args(argv)
    card = competition_card(args.mice, args.neurons)
    print(f"{args.mice} mice, {args.neurons:,} neurons, frames {card.frame_shape[0]}x{card.frame_shape[1]}\n")
    header = f"{'config':<22}{'total':>14}  parts{'':<67}paper"
    print(header)
    print("-" * len(header))
    rows = [(name, "", card, paper) for name, paper in PAPER.items()]
    static_card = competition_card(args.static_mice, args.static_neurons, kind="static")
    rows += [(name, variant, static_card, paper) for (name, variant), paper in STATIC_PAPER.items()]
    for name, variant, row_card, paper in rows:
        config = load_config(REPO / "configs" / f"{name}.py", variant or None)
        model = nnx.eval_shape(lambda: build_model(config.model, row_card, nnx.Rngs(0)))
        parts = count_by_part(model)
        total = sum(parts.values())
        detail = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in parts.items())
        label = f"{name}:{variant}" if variant else name
        print(f"{label:<22}{total:>14,}  {detail:<70}  {paper}")
    print(f"\nstatic rows: {args.static_mice} mice, {args.static_neurons:,} neurons, images 36x64")


if __name__ == "__main__":
    main()
