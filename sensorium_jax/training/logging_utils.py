"""Metrics written as JSON lines (one record per log or evaluation), process 0 only."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jax


class MetricsWriter:
    """Appends records to `workdir/metrics.jsonl`; a resumed run first drops what it will redo."""

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

    def drop_after(self, step: int) -> None:
        """Keeps the records up to `step`, the step training restarts from (0: none, since the
        untrained validation is logged again). A run killed after its last checkpoint logged steps
        that the resumed run logs again; without this each would appear twice. Atomic rewrite."""
        if not self.enabled or not self.path.exists():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if step > 0 and _record_step(line) <= step]
        if len(kept) == len(lines):
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text("".join(line + "\n" for line in kept))
        os.replace(temporary, self.path)


def _record_step(line: str) -> float:
    """The step of one metrics line; a line cut short by a kill counts as past every step."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def read_metrics(workdir: str | Path, kind: str | None = None) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r["kind"] == kind]
