"""Sizes of the synthetic data sets: `tiny` (tests), `small` (quick runs), `full` (SENSORIUM scale)."""

from __future__ import annotations

import dataclasses

from sensorium_jax.data.kinds import VIDEO
from sensorium_jax.data.synthetic import neurons


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes of one synthetic data set (per mouse unless said otherwise)."""

    name: str
    mice: int
    neurons: tuple[int, int]  # inclusive range; neighbouring mice get different counts
    train_trials: int
    frames: int  # frames of a trial
    long_trials: int  # train trials longer than `frames` (up to `max_frames`, NaN-padded)
    max_frames: int
    repeats: int  # presentations of each repeated stimulus
    repeated_stimuli: dict[str, int]  # video tier -> distinct stimuli
    calibration_clips: int  # independent natural clips of `frames` frames
    static_train: int
    static_repeated: dict[str, int]  # static tier -> distinct images
    bank: neurons.FilterBank = neurons.FilterBank()
    rates_dtype: str = "float32"
    median_samples: int = 4096  # rows the writer keeps per statistic for medians
    reliability: tuple[float, float] = neurons.RELIABILITY

    @property
    def video_trials(self) -> int:
        return self.train_trials + self.repeats * sum(self.repeated_stimuli.values())

    @property
    def static_trials(self) -> int:
        return self.static_train + self.repeats * sum(self.static_repeated.values())


def _repeated(oracle: int, live_main: int, live_bonus: int, final_main: int, final_bonus: int) -> dict[str, int]:
    counts = (oracle, live_main, live_bonus, final_main, final_bonus)
    return dict(zip(VIDEO.repeated_tiers, counts))


PRESETS = {
    "tiny": Preset(
        name="tiny",
        mice=2,
        neurons=(120, 160),
        train_trials=40,
        frames=60,
        long_trials=2,
        max_frames=72,
        repeats=3,
        repeated_stimuli=_repeated(oracle=4, live_main=1, live_bonus=1, final_main=1, final_bonus=2),
        calibration_clips=3,
        static_train=40,
        static_repeated={"validation": 4, "test": 4, "final_test": 4},
        reliability=(9.0, 3.0),
    ),
    "small": Preset(
        name="small",
        mice=3,
        neurons=(100, 200),
        train_trials=60,
        frames=150,
        long_trials=6,
        max_frames=165,
        repeats=10,
        repeated_stimuli=_repeated(oracle=5, live_main=2, live_bonus=2, final_main=2, final_bonus=4),
        calibration_clips=4,
        static_train=2000,
        static_repeated={"validation": 20, "test": 20, "final_test": 20},
    ),
    "full": Preset(
        name="full",
        mice=10,
        neurons=(7440, 8285),
        train_trials=180,
        frames=300,
        long_trials=18,
        max_frames=320,
        repeats=10,
        repeated_stimuli=_repeated(oracle=6, live_main=6, live_bonus=6, final_main=6, final_bonus=12),
        calibration_clips=3,
        static_train=5000,
        static_repeated={"validation": 100, "test": 100, "final_test": 100},
        rates_dtype="float16",  # halves the ground truth on disk; correlations are unaffected
        median_samples=1024,  # 1024 x 8,000 neurons x 8 B = 65 MB
    ),
}
