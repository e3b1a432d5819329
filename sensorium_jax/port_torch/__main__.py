r"""Imports a PyTorch state dict of a reference model into an orbax workdir (see the package).

    python -m sensorium_jax.port_torch --state-dict FILE.pt --config configs/<model>.py[:variant] \
        --store STORE --out WORKDIR [--config.model.core.spatial_padding=SAME ...]

Exit statuses as every entry point: 0 done, 2 bad input (a missing, unknown or misshapen key,
a mouse the store lacks, a config problem), 130 interrupted.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from sensorium_jax.config_checks import config_flags_parser

DEFAULT_CONFIG = "configs/factorized_baseline.py"
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file[:variant] of the imported model.",
                                lock_config=True)
flags.DEFINE_string("state-dict", None, "PyTorch .pt file (a state dict, read with weights_only=True).",
                    required=True)
flags.DEFINE_string("store", None, "Store whose mice the model reads out.", required=True)
flags.DEFINE_string("out", None, "New workdir to write.", required=True)
flags.DEFINE_list("mice", [], "Store mouse names of a reference's per-mouse entries in their order, for "
                  "references that number them (DwiseNeuro's readouts.<k>; default: its own order).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.ERROR)  # orbax notes at WARNING that the import has no score
    from sensorium_jax.errors import run_cli
    from sensorium_jax.port_torch import import_checkpoint

    step = run_cli(import_checkpoint, FLAGS["state-dict"].value, FLAGS.config, FLAGS.store, FLAGS.out,
                   FLAGS.mice or None)
    print(f"imported {FLAGS['state-dict'].value} -> {step}")


if __name__ == "__main__":
    app.run(main, flags_parser=config_flags_parser(DEFAULT_CONFIG))
