"""Multi-process start-up: one `jax.distributed.initialize` before anything touches devices."""

from __future__ import annotations

import os

import jax


def initialize(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """Joins a multi-process run when flags or the environment ask for one.

    Explicit flags win; otherwise JAX's own auto-detection (SLURM, Open MPI, TPU pods, or
    the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables) decides.
    A plain single-process run initializes nothing.
    """
    if coordinator or num_processes > 1:
        if not (coordinator and num_processes > 1 and process_id >= 0):
            raise ValueError("a multi-process run needs --coordinator, --num_processes > 1 and --process_id")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                                   heartbeat_timeout_seconds=heartbeat_timeout())
        return
    environment = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
    if any(os.environ.get(name) for name in environment):
        if os.environ.get("SLURM_NTASKS", "1") == "1" and not os.environ.get("JAX_COORDINATOR_ADDRESS") \
                and os.environ.get("OMPI_COMM_WORLD_SIZE", "1") == "1":
            return
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout())


HEARTBEAT_TIMEOUT_ENV = "SENSORIUM_JAX_HEARTBEAT_TIMEOUT_S"
DEFAULT_HEARTBEAT_TIMEOUT_S = 60


def heartbeat_timeout() -> int:
    """Seconds without a peer's heartbeat before JAX's coordination service declares it dead and
    ends the survivors ("...the JAX distributed service detected fatal errors..."), instead of
    leaving them waiting in a collective. Heartbeats come from a background thread, so long
    compilations do not count; `SENSORIUM_JAX_HEARTBEAT_TIMEOUT_S` overrides the default."""
    return int(os.environ.get(HEARTBEAT_TIMEOUT_ENV, DEFAULT_HEARTBEAT_TIMEOUT_S))


def finish() -> None:
    """Leaves a multi-process run together: nobody shuts the coordinator down while another
    process is still finishing its last checkpoint."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("sensorium_jax: run finished")
        jax.distributed.shutdown()
