"""The printed table: pure formatting of the report dict the command also writes as JSON."""

from __future__ import annotations


def _si(value: float | None, unit: str) -> str:
    """1.2e9, "FLOP/s" -> "1.20 GFLOP/s"."""
    if value is None:
        return "n/a"
    for prefix, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


TRAIN_COLUMNS = ("batch", "compile s", "step ms p50 [p10-p90]", "clips/s", "frames/s", "input wait",
                 "FLOP/step", "FLOP/s", "MFU", "compiles", "dev mem")


def training_row(label: str, t: dict) -> list[str]:
    s = t["step_seconds"]
    flops, rate = t["flops_per_step"], t["flops_per_second"]
    return [
        label,
        str(t["global_batch"]),
        f"{t['compile_seconds']:.2f}",
        f"{1e3 * s['median']:.1f} [{1e3 * s['p10']:.1f}-{1e3 * s['p90']:.1f}]",
        f"{t['clips_per_second']:.1f}",
        f"{t['frames_per_second']:.0f}",
        _percent(t["input_wait_fraction"]),
        _si(flops, "FLOP"),
        _si(rate, "FLOP/s"),
        _percent(t["utilisation"]),
        str(t["train_step_compilations"]),
        _bytes(t["peak_device_memory_bytes"]),
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_report(report: dict) -> str:
    """The human-readable summary of one bench run."""
    m = report["machine"]
    lines = [
        f"machine: {m['device_count']} x {m['device_kind']} ({m['backend']}), jax {m['jax_version']}"
        + (f", XLA_FLAGS={m['xla_flags']}" if m.get("xla_flags") else ""),
        f"config:  {report['config_path']}" + (f"  {' '.join(report['overrides'])}" if report["overrides"] else ""),
        "",
    ]
    sweep = report.get("sweep")
    if sweep:
        title = f"training, sweeping {sweep['name']}" + (f" ({sweep['key']})" if sweep["key"] != sweep["name"] else "")
        rows = [training_row(str(r["value"]), r["training"]) for r in sweep["rows"]]
        first_column = sweep["name"]
    else:
        title, first_column = "training", ""
        rows = [training_row("train step", report["training"])]
    lines.append(title)
    lines += _table([first_column, *TRAIN_COLUMNS], rows)
    any_training = sweep["rows"][0]["training"] if sweep else report["training"]
    peak = any_training["peak_flops_per_device"]
    lines.append(
        f"(compute dtype {any_training['compute_dtype']}; peak "
        + (f"{peak / 1e12:.0f} TFLOP/s per device" if peak else "unknown for this device: MFU n/a")
        + "; times include fetching the batch, synchronised every step)"
    )
    p, k, i = report["pipeline"], report["metric_kernel"], report["inference"]
    lines += [
        "",
        f"input pipeline alone:   {p['clips_per_second']:.1f} clips/s ({p['frames_per_second']:.0f} frames/s, "
        f"batches of {p['process_batch']})",
        f"metric kernel:          {k['gb_per_second']:.2f} GB/s (single-trial correlation, "
        f"{'x'.join(map(str, k['shape']))} trials x frames x neurons)",
        "inference:              skipped (--inference_rounds=0)" if i is None else
        f"inference:              {i['trials_per_second']:.2f} trials/s ({i['trial_frames']}-frame trials, "
        f"{i['trials_per_call']} per call)",
        f"peak host memory:       {_bytes(report['peak_host_rss_bytes'])}",
    ]
    return "\n".join(lines)
