"""Trains a digital twin of mouse visual cortex.

    python train.py                                   # quickstart on the synthetic mouse
    python train.py --config configs/smoke.py --workdir runs/smoke
    python train.py --config configs/dwiseneuro.py:smoke --workdir runs/dwiseneuro_smoke
    python train.py --config configs/factorized_baseline.py --workdir runs/base \
        --config.data.store=/data/sensorium_store

Paths are relative to the current folder. Re-running the same command resumes from the
workdir's latest checkpoint; Ctrl-C (or SIGTERM) saves one at the current step first. Every
config value is checked before any work, one line per problem. Exit statuses: 0 done, 2 bad input
(config, data, a workdir another training holds or a config its checkpoints cannot resume), 3 out
of memory, 4 the loss became NaN/inf, 5 disk full, 6 a peer of a multi-process run stopped
answering, 130 interrupted (README.md, "Exit statuses").
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from sensorium_jax.config_checks import config_flags_parser

DEFAULT_CONFIG = "configs/quickstart.py"
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file[:variant].",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/quickstart", "Where checkpoints, metrics and the summary go.")
flags.DEFINE_string("coordinator", "", "host:port of process 0 for multi-process runs.")
flags.DEFINE_integer("num_processes", 0, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
flags.DEFINE_bool("verbose", False, "Show the INFO logs of orbax, absl and JAX (hundreds of lines).")


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save and wait at INFO
    from sensorium_jax import distributed, supervisor

    if (FLAGS.coordinator or FLAGS.num_processes > 1) and not supervisor.is_supervised():
        supervisor.run_supervised(FLAGS.process_id, distributed.heartbeat_timeout())
    distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)

    from sensorium_jax.errors import run_cli
    from sensorium_jax.training.loop import train_and_evaluate

    run_cli(train_and_evaluate, FLAGS.config, FLAGS.workdir)
    distributed.finish()


if __name__ == "__main__":
    app.run(main, flags_parser=config_flags_parser(DEFAULT_CONFIG))
