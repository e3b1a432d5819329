"""Metrics written as JSON lines (one record per log or evaluation), process 0 only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax


class MetricsWriter:
    def __init__(self, workdir: str | Path, filename: str = "metrics.jsonl"):
        self.path = Path(workdir) / filename
        self.enabled = jax.process_index() == 0

    def write(self, step: int, kind: str, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, "time": time.time()}
        record.update({k: (float(v) if hasattr(v, "__float__") else v) for k, v in values.items()})
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def read_metrics(workdir: str | Path, kind: str | None = None) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r["kind"] == kind]
