"""Peak dense matmul throughput of common accelerators, for model FLOPs utilisation (MFU).

Figures are per device (one GPU, one TPU chip as JAX sees it), dense (no 2:4 sparsity),
from the vendors' data sheets. fp32 on NVIDIA is the plain (non-TF32) CUDA-core rate. XLA's
default matmul precision on TPU is a single bf16 pass, so the TPU fp32 entry is the bf16
rate. Devices not listed (CPUs, unknown GPUs) have no peak: their utilisation is None.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Peak:
    name: str
    bf16: float  # FLOP/s
    fp32: float  # FLOP/s


T = 1e12

# Matched in order against the lower-cased device kind: more specific patterns first.
PEAKS: tuple[tuple[tuple[str, ...], Peak], ...] = (
    (("h100", "pcie"), Peak("H100 PCIe", 756 * T, 51.2 * T)),
    (("h100", "nvl"), Peak("H100 NVL", 835 * T, 60.0 * T)),
    (("h100",), Peak("H100 SXM", 989 * T, 66.9 * T)),
    (("h200",), Peak("H200", 989 * T, 66.9 * T)),
    (("a100",), Peak("A100", 312 * T, 19.5 * T)),
    (("a6000",), Peak("RTX A6000", 154.8 * T, 38.7 * T)),
    (("a5000",), Peak("RTX A5000", 111.1 * T, 27.8 * T)),
    (("tpu v4",), Peak("TPU v4", 275 * T, 275 * T)),
    (("tpu v5 lite",), Peak("TPU v5e", 197 * T, 197 * T)),
    (("tpu v5e",), Peak("TPU v5e", 197 * T, 197 * T)),
)


def lookup_peak(device_kind: str) -> Peak | None:
    """The peak of a `jax.Device.device_kind` such as "NVIDIA H100 80GB HBM3", or None."""
    kind = device_kind.lower()
    for patterns, peak in PEAKS:
        if all(p in kind for p in patterns):
            return peak
    return None


def peak_flops(device_kind: str, compute_dtype: str) -> float | None:
    """Per-device peak FLOP/s for the model's compute dtype (bfloat16 or float32), or None."""
    peak = lookup_peak(device_kind)
    if peak is None:
        return None
    return peak.bf16 if compute_dtype in ("bfloat16", "bf16") else peak.fp32


def utilisation(
    flops_per_step: float, step_seconds: float, n_devices: int, peak_per_device: float | None
) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak of all devices; None without a peak."""
    if peak_per_device is None or step_seconds <= 0 or flops_per_step <= 0:
        return None
    return flops_per_step / step_seconds / (peak_per_device * n_devices)
