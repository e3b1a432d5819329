"""Figures of an evaluation: correlation distributions, example traces, readout positions."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def correlation_histograms(per_tier: dict[str, np.ndarray], path: Path,
                           xlabel: str = "single-trial correlation") -> Path:
    """Distribution of a per-neuron score (default: single-trial correlation), one panel per tier."""
    tiers = list(per_tier)
    fig, axes = plt.subplots(1, len(tiers), figsize=(4 * len(tiers), 3.2), squeeze=False)
    for ax, tier in zip(axes[0], tiers):
        values = per_tier[tier]
        ax.hist(values, bins=40, color="#3b6ea5", alpha=0.85)
        ax.axvline(values.mean(), color="k", lw=1, ls="--", label=f"mean {values.mean():.3f}")
        ax.set_title(tier)
        ax.set_xlabel(xlabel)
        ax.legend(frameon=False)
    axes[0][0].set_ylabel("neurons")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def example_traces(recorded: np.ndarray, predicted: np.ndarray, title: str, path: Path, neurons: int = 4) -> Path:
    """Recorded vs predicted responses of the best-predicted neurons of one trial ([T, N])."""
    centered_r = recorded - recorded.mean(0)
    centered_p = predicted - predicted.mean(0)
    denominator = np.sqrt((centered_r**2).sum(0) * (centered_p**2).sum(0)) + 1e-12
    order = np.argsort(-(centered_r * centered_p).sum(0) / denominator)[:neurons]
    fig, axes = plt.subplots(len(order), 1, figsize=(9, 1.6 * len(order)), sharex=True, squeeze=False)
    for ax, n in zip(axes[:, 0], order):
        ax.plot(recorded[:, n], color="0.55", lw=1, label="recorded")
        ax.plot(predicted[:, n], color="#c0392b", lw=1.3, label="predicted")
        ax.set_ylabel(f"neuron {n}")
    axes[0, 0].legend(frameon=False, ncol=2, loc="upper right")
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def example_scatter(recorded: np.ndarray, predicted: np.ndarray, title: str, path: Path, neurons: int = 4) -> Path:
    """Recorded vs predicted responses over trials ([trials, N]) of the best-predicted neurons:
    static trials have one frame each, so a trace over frames would be a single point."""
    centered_r = recorded - recorded.mean(0)
    centered_p = predicted - predicted.mean(0)
    denominator = np.sqrt((centered_r**2).sum(0) * (centered_p**2).sum(0)) + 1e-12
    correlation = (centered_r * centered_p).sum(0) / denominator
    order = np.argsort(-correlation)[:neurons]
    fig, axes = plt.subplots(1, len(order), figsize=(3 * len(order), 3.1), squeeze=False)
    for ax, n in zip(axes[0], order):
        ax.scatter(recorded[:, n], predicted[:, n], s=8, color="#c0392b", alpha=0.7)
        ax.set_title(f"neuron {n}: r = {correlation[n]:.2f}", fontsize=9)
        ax.set_xlabel("recorded")
    axes[0, 0].set_ylabel("predicted")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def readout_positions(learned_px: np.ndarray, true_px: np.ndarray | None, frame_shape: tuple[int, int],
                      title: str, path: Path) -> Path:
    """Learned receptive-field positions on the screen, against the true ones when known."""
    h, w = frame_shape
    fig, ax = plt.subplots(figsize=(6.4, 3.9))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    if true_px is not None:
        for (x0, y0), (x1, y1) in zip(true_px, learned_px):
            ax.plot([x0, x1], [y0, y1], color="0.75", lw=0.6)
        ax.scatter(true_px[:, 0], true_px[:, 1], s=10, color="0.3", label="true")
    ax.scatter(learned_px[:, 0], learned_px[:, 1], s=10, color="#c0392b", label="learned")
    ax.set_title(title)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
