"""The kinds of data set a source can be, each described once: tiers, keys, shapes, burn-in.

Every layer (folder reader, store, pipeline, evaluators, models) asks the kind instead of
comparing the strings "video" and "static".
"""

from __future__ import annotations

import dataclasses

# Frames the SENSORIUM 2023 metrics drop from the start of every trial before scoring.
BURN_IN_FRAMES = 50

# Tiers whose trials are never scored (the training set, and trials the release marks unused).
UNSCORED_TIERS = ("train", "none")


@dataclasses.dataclass(frozen=True)
class DatasetKind:
    """One source format: what its folders hold and how its trials are scored."""

    name: str  # "video" (SENSORIUM 2023) or "static" (SENSORIUM 2022)
    stimulus_key: str  # the folder's stimulus directory under data/ and meta/statistics/
    tiers: tuple[str, ...]  # every tier a trial may carry, in the release's order
    required_tiers: tuple[str, ...]  # tiers a usable folder must have
    validation_tier: str  # the tier repeated stimuli are validated on
    repeated_tiers: tuple[str, ...]  # tiers whose stimuli are shown several times
    bonus_tiers: tuple[str, ...]  # out-of-distribution tiers, scored per stimulus type too
    behavior_dim: int  # behaviour variables per frame (video) or trial (static)
    stimulus_id_file: str  # meta/trials/ file that groups repeats of one stimulus
    burn_in: int  # frames dropped from each trial before scoring (0: one frame per trial)

    @property
    def is_video(self) -> bool:
        return self.name == "video"

    @property
    def array_keys(self) -> tuple[str, ...]:
        """The per-trial arrays of a folder, stimulus first."""
        return (self.stimulus_key, "responses", "behavior", "pupil_center")


VIDEO = DatasetKind(
    name="video",
    stimulus_key="videos",
    tiers=("train", "oracle", "live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus", "none"),
    required_tiers=("train", "oracle"),
    validation_tier="oracle",
    repeated_tiers=("oracle", "live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus"),
    bonus_tiers=("live_test_bonus", "final_test_bonus"),
    behavior_dim=2,
    stimulus_id_file="condition_hash.npy",
    burn_in=BURN_IN_FRAMES,
)

STATIC = DatasetKind(
    name="static",
    stimulus_key="images",
    tiers=("train", "validation", "test", "final_test"),
    required_tiers=("train", "validation"),
    validation_tier="validation",
    repeated_tiers=("validation", "test", "final_test"),
    bonus_tiers=(),
    behavior_dim=3,
    stimulus_id_file="frame_image_id.npy",
    burn_in=0,
)

KINDS: dict[str, DatasetKind] = {kind.name: kind for kind in (VIDEO, STATIC)}


def kind_named(name: str) -> DatasetKind:
    """The kind called `name`; a clear error for anything else."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown data set kind {name!r}; known: {', '.join(KINDS)}") from None


def as_kind(kind: str | DatasetKind) -> DatasetKind:
    """Accepts either a kind or its name (JSON and dataclass fields keep the name)."""
    return kind if isinstance(kind, DatasetKind) else kind_named(kind)


# Optional per-trial metadata: the stimulus type of each trial ("natural" or an
# out-of-distribution type); bonus tiers are scored per type. Absent: every trial "unknown".
STIMULUS_TYPE_FILE = "stimulus_type.npy"
UNKNOWN_STIMULUS_TYPE = "unknown"
