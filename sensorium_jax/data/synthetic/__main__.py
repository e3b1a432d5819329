"""CLI: `python -m sensorium_jax.data.synthetic --out DIR [--preset tiny|small|full] ...`.

Bad input ends with one `error: ...` line and exit status 2.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from sensorium_jax.data import cli
from sensorium_jax.data.statistics import LAYOUTS, PER_FRAME
from sensorium_jax.data.synthetic.presets import PRESETS
from sensorium_jax.data.synthetic.writer import generate
from sensorium_jax.errors import InputDataError


def define_flags() -> None:
    """This CLI's flags (registered only when it runs as a program)."""
    flags.DEFINE_string("out", None, "folder that receives one subfolder per mouse", required=True)
    flags.DEFINE_enum("preset", "tiny", sorted(PRESETS), "data set size")
    flags.DEFINE_integer("mice", None, "number of mice (default: the preset's)")
    flags.DEFINE_integer("seed", 0, "everything is deterministic from it")
    flags.DEFINE_boolean("static", False, "2022 static-image format")
    flags.DEFINE_enum("statistics", PER_FRAME, list(LAYOUTS), "layout of video folders' meta/statistics")
    flags.DEFINE_boolean("no-progress", False, "no progress bar")


def main(argv: Sequence[str]) -> None:
    """Writes the folders; positional arguments are not taken."""
    if len(argv) > 1:
        raise InputDataError("command line", "arguments", "flags only (--out, --preset, ...)", " ".join(argv[1:]))
    values = flags.FLAGS
    generate(values.out, values.preset, values.seed, values.mice, values.static,
             progress=not values["no-progress"].value, verbose=True, statistics=values.statistics)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
