"""A sweep at a glance: throughput, step time and memory against the swept value."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def sweep_figure(report: dict, path: Path) -> Path:
    """Clips/s, step time (median with p10-p90) and peak memory for each swept value."""
    sweep = report["sweep"]
    values = [row["value"] for row in sweep["rows"]]
    runs = [row["training"] for row in sweep["rows"]]
    labels = [str(v) for v in values]
    x = range(len(values))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    axes[0].plot(x, [t["clips_per_second"] for t in runs], "o-", color="#3b6ea5")
    axes[0].set_ylabel("clips/s")
    median = [t["step_seconds"]["median"] for t in runs]
    spread = [
        [m - t["step_seconds"]["p10"] for m, t in zip(median, runs)],
        [t["step_seconds"]["p90"] - m for m, t in zip(median, runs)],
    ]
    axes[1].errorbar(x, median, yerr=spread, fmt="o-", color="#a5553b", capsize=3)
    axes[1].set_ylabel("step time (s, median, p10-p90)")
    device = [t.get("peak_device_memory_bytes") for t in runs]
    memory, where = (device, "device") if all(device) else ([t["peak_host_rss_bytes"] for t in runs], "host")
    axes[2].plot(x, [m / 2**30 for m in memory], "o-", color="#4a8a4a")
    axes[2].set_ylabel(f"peak {where} memory (GiB)" + (", process so far" if where == "host" else ""))
    for ax in axes:
        ax.set_xticks(list(x), labels)
        ax.set_xlabel(sweep["name"])
        ax.grid(alpha=0.3)
    machine = report["machine"]
    fig.suptitle(f"{report['config_name']} on {machine['device_count']} x {machine['device_kind']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
