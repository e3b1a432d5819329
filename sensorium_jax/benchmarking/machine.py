"""What the measurements ran on, and how much memory they took."""

from __future__ import annotations

import os
import platform
import resource
import sys

import jax


def describe_machine() -> dict:
    """Devices, backend and versions, recorded next to every figure so runs can be compared."""
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "devices": [str(d) for d in devices],
        "jax_version": jax.__version__,
        "python_version": platform.python_version(),
        "host": platform.node(),
        # Compiler flags change speed and memory (e.g. XLA:CPU's scheduler), so they are part
        # of the machine a figure was taken on.
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def peak_device_memory_bytes() -> int | None:
    """Largest `peak_bytes_in_use` over this process's devices; None where the backend has no
    memory statistics (CPU)."""
    peaks = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats()
        except (AttributeError, NotImplementedError, RuntimeError):
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def peak_host_rss_bytes() -> int:
    """This process's peak resident memory (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024
