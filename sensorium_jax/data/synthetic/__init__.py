"""The synthetic digital mouse: official-format SENSORIUM folders from a known ground truth.

    python -m sensorium_jax.data.synthetic --out DIR --preset {tiny,small,full} \
        [--mice K] [--seed S] [--static] [--statistics {per_frame,per_neuron}] [--no-progress]

writes one folder per mouse, `dynamic-synthetic-<seed>-<k>` (2023 video format, statistics
per frame like the release unless `--statistics per_neuron`) or `static-synthetic-<seed>-<k>`
(2022 image format with `--static`), plus `ground_truth/` (see `writer`). The noise-free rate
is the expected response given the stimulus, behaviour and eye position, so `oracle_ceiling`
(its correlation with the noisy responses) is the best score any model can reach.
Everything is deterministic from the seed.

Modules: `presets` (sizes), `plan` (trials and seeds), `neurons` and `stimuli` (the model),
`simulate` (the animal), `writer` (folders), `oracle` (ceiling), `threads` (BLAS threads),
`correlation` (the NumPy Pearson the ceiling uses), `__main__` (the CLI).
"""

from sensorium_jax.data.synthetic.oracle import GROUND_TRUTH, default_burn_in, format_oracle, oracle_ceiling
from sensorium_jax.data.synthetic.plan import (
    Trial,
    mouse_name,
    neuron_count,
    static_plan,
    trial_video,
    video_plan,
)
from sensorium_jax.data.synthetic.presets import PRESETS, Preset
from sensorium_jax.data.synthetic.simulate import (
    Mouse,
    build_mouse,
    simulate_static_trials,
    simulate_video_trial,
)
from sensorium_jax.data.synthetic.writer import generate, write_static_mouse, write_video_mouse

__all__ = [
    "GROUND_TRUTH",
    "PRESETS",
    "Mouse",
    "Preset",
    "Trial",
    "build_mouse",
    "default_burn_in",
    "format_oracle",
    "generate",
    "mouse_name",
    "neuron_count",
    "oracle_ceiling",
    "simulate_static_trials",
    "simulate_video_trial",
    "static_plan",
    "trial_video",
    "video_plan",
    "write_static_mouse",
    "write_video_mouse",
]
