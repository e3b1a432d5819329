"""The accelerator suite end to end on CPU with tiny shapes: every field written, JSON and table."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tiny_suite_writes_every_field(tiny_store, tmp_path):
    from sensorium_jax.benchmarking.suite import TINY, TRAIN_FIELDS, variants

    out = tmp_path / "suite"
    done = subprocess.run(
        [sys.executable, "-m", "sensorium_jax.bench", "--suite", "--tiny", "--out", str(out), "--budget_s", "900"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "suite.json").read_text())
    table = (out / "suite.md").read_text()

    expected = [(e.name, d, r) for e in TINY for d, r in variants(e, tiny=True)]
    assert [(r["model"], r["dtype"], r["remat"]) for r in report["training"]] == expected
    assert ("factorized", "bfloat16", True) in expected  # both dtypes and remat are exercised
    for row in report["training"]:
        assert "error" not in row and "skipped" not in row, row
        assert set(TRAIN_FIELDS) <= set(row), set(TRAIN_FIELDS) - set(row)
        for key in ("params", "compile_seconds", "clips_per_second", "flops_per_step", "flops_per_second",
                    "program_memory_bytes"):
            assert finite_positive(row[key]), (row["model"], key, row[key])
        assert math.isfinite(row["final_loss"])
        assert row["step_seconds"]["min"] <= row["step_seconds"]["median"] <= row["step_seconds"]["max"]
        assert row["mfu"] is None  # no peak is known for a CPU
        assert f"| {row['model']} | {row['dtype']} | {'on' if row['remat'] else 'off'} |" in table

    assert finite_positive(report["pipeline"]["clips_per_second"])
    metric = report["metric_kernel"]
    for key in ("kernel_gb_per_second", "plain_read_gb_per_second", "kernel_over_plain_read"):
        assert finite_positive(metric[key]), key
    assert report["inference"] and all(finite_positive(r["trials_per_second"]) for r in report["inference"])
    assert report["machine"]["backend"] == "cpu" and report["versions"]["jax"]
    assert finite_positive(report["peak_host_rss_bytes"]) and report["seconds"] > 0
    assert "input pipeline" in table and "metric kernel" in table and "inference" in table
