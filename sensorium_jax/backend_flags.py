"""XLA flags the project sets where they were measured to help, before JAX's backends start.

XLA parses `XLA_FLAGS` once, when the first backend initialises (the first array operation),
not at `import jax`; so setting the variable here, on importing `sensorium_jax`, reaches every
command and test that imports the package before its first computation. A flag the user
already names in `XLA_FLAGS` is never touched, and `SENSORIUM_JAX_XLA_DEFAULTS=0` leaves the
variable alone entirely.

The flags (docs/PERFORMANCE.md has the measurements):
- `--xla_cpu_use_onednn=true` on Intel x86-64 CPUs: XLA:CPU then runs convolutions and
  matrix-product fusions with oneDNN, which made the factorized baseline's training step 2.4x
  faster on an Intel Xeon; on an AMD EPYC the same path was slower for every form of the
  core, so it is left off there. CPU-only: other backends ignore the flag.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import MutableMapping

OPT_OUT_ENV = "SENSORIUM_JAX_XLA_DEFAULTS"
ONEDNN = "--xla_cpu_use_onednn"
X86_64 = ("x86_64", "amd64")


def cpu_vendor() -> str:
    """The CPU's vendor id ("GenuineIntel", "AuthenticAMD"; "" where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def project_flags(machine: str | None = None, vendor: str | None = None) -> tuple[str, ...]:
    """The `--name=value` flags the project sets on this kind of CPU: oneDNN exists in jaxlib's
    CPU backend for x86-64 only, and was measured faster on Intel CPUs, slower on AMD ones."""
    machine = (machine or platform.machine()).lower()
    vendor = cpu_vendor() if vendor is None else vendor
    return (f"{ONEDNN}=true",) if machine in X86_64 and vendor == "GenuineIntel" else ()


def flag_name(flag: str) -> str:
    """'--xla_cpu_use_onednn=true' -> '--xla_cpu_use_onednn'."""
    return flag.split("=", 1)[0]


def merged(current: str, defaults: tuple[str, ...]) -> str:
    """`current` XLA_FLAGS plus each default whose name it does not mention already."""
    named = {flag_name(f) for f in current.split()}
    added = [f for f in defaults if flag_name(f) not in named]
    return " ".join([current.strip(), *added]).strip()


def backends_started() -> bool:
    """Whether JAX already initialised a backend (then XLA_FLAGS is read and changes are moot);
    checked without importing JAX."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def apply(environ: MutableMapping[str, str] | None = None, machine: str | None = None,
          vendor: str | None = None) -> str:
    """Adds the project's flags to `environ["XLA_FLAGS"]` (default: this process's) unless the
    user opted out or (for this process's) the backends already started; returns the
    resulting XLA_FLAGS."""
    own = environ is None or environ is os.environ
    environ = os.environ if environ is None else environ
    current = environ.get("XLA_FLAGS", "")
    if environ.get(OPT_OUT_ENV, "1") == "0" or (own and backends_started()):
        return current
    flags = merged(current, project_flags(machine, vendor))
    if flags != current:
        environ["XLA_FLAGS"] = flags
    return flags


def onednn_enabled(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether XLA_FLAGS turns XLA:CPU's oneDNN path on (the last mention wins, as in XLA)."""
    environ = os.environ if environ is None else environ
    value = None
    for flag in environ.get("XLA_FLAGS", "").split():
        if flag_name(flag) == ONEDNN:
            value = flag.split("=", 1)[1].lower() if "=" in flag else "true"
    return value in ("true", "1")


apply()
