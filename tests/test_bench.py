"""The throughput benchmark: its pure helpers, and the command end to end on the tiny store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_peak_lookup_and_utilisation():
    from sensorium_jax.benchmarking.peaks import lookup_peak, peak_flops, utilisation

    assert lookup_peak("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert lookup_peak("NVIDIA H100 PCIe").name == "H100 PCIe"
    assert lookup_peak("NVIDIA A100-SXM4-40GB").name == "A100"
    assert lookup_peak("TPU v5 lite").name == "TPU v5e"
    assert lookup_peak("cpu") is None
    assert peak_flops("cpu", "float32") is None

    peak = peak_flops("NVIDIA H100 80GB HBM3", "bfloat16")
    assert peak == pytest.approx(989e12)
    assert peak_flops("NVIDIA H100 80GB HBM3", "float32") == pytest.approx(66.9e12)
    # 4 devices, 2e15 FLOPs per step in 10 ms: 2e17 FLOP/s achieved of 4 x 989e12 available.
    assert utilisation(2e15, 0.01, 4, peak) == pytest.approx(2e17 / (4 * 989e12))
    assert utilisation(2e15, 0.01, 4, None) is None


def test_timing_summaries_and_cost_analysis():
    from sensorium_jax.benchmarking.timing import flops_from_cost_analysis, summarize

    s = summarize([0.3, 0.1, 0.2, 10.0])
    assert s["median"] == pytest.approx(0.25)
    assert s["min"] == 0.1 and s["max"] == 10.0
    assert s["p10"] <= s["median"] <= s["p90"]
    assert flops_from_cost_analysis({"flops": 12.0, "bytes accessed": 3.0}) == 12.0
    assert flops_from_cost_analysis([{"flops": 7.0}]) == 7.0  # older JAX: one dict per executable
    assert flops_from_cost_analysis(None) is None
    assert flops_from_cost_analysis({"flops": 0.0}) is None


def test_sweep_parsing():
    from sensorium_jax.benchmarking.sweep import parse_sweep, with_value
    from sensorium_jax.config import load_config
    from sensorium_jax.errors import InputDataError

    smoke_config = load_config(REPO / "configs" / "smoke.py")  # no store needed to parse

    plan = parse_sweep("batch_size=2,4", smoke_config)
    assert plan.key == "data.clips_per_mouse" and plan.values == (2, 4)
    smoke_config.data.mouse_sampling = "uniform"
    assert parse_sweep("batch_size=8", smoke_config).key == "data.batch_size"

    plan = parse_sweep("schedule.learning_rate=1e-3,2e-3", smoke_config)
    assert plan.values == (1e-3, 2e-3)
    updated = with_value(smoke_config, plan.key, plan.values[1])
    assert updated.schedule.learning_rate == 2e-3 and smoke_config.schedule.learning_rate == 5e-3
    with pytest.raises(InputDataError):
        parse_sweep("data.no_such_key=1,2", smoke_config)
    with pytest.raises(InputDataError):
        parse_sweep("data.clips_per_mouse=two", smoke_config)


def _bench(tiny_store: Path, out: Path, *extra: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "sensorium_jax.bench", "--config", "configs/smoke.py",
         f"--config.data.store={tiny_store}", "--steps", "3", "--metric_shape", "4,100,500",
         "--inference_rounds", "2", "--json", str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    inference_line = "trials/s" if report["inference"] else "inference:              skipped"
    assert "clips/s" in result.stdout and inference_line in result.stdout  # the printed table
    return report


def _check_training(t: dict, device_count: int) -> None:
    for key in ("median", "p10", "p90", "min", "max"):
        assert t["step_seconds"][key] > 0
    assert t["step_seconds"]["p10"] <= t["step_seconds"]["median"] <= t["step_seconds"]["p90"]
    assert t["compile_seconds"] > 0 and t["lower_seconds"] > 0
    # (clips/s and FLOPs against independent measurements: test_training_figures_match_a_timed_loop)
    assert 0 <= t["input_wait_fraction"] < 1
    assert t["flops_per_step"] > 0
    if t["peak_flops_per_device"] is None:
        assert t["utilisation"] is None
    else:
        assert 0 < t["utilisation"] <= 1
    # the compile counter (monitoring events) agrees with jax's own dispatch cache
    assert t["train_step_compilations"] == 1 == t["jit_cache_entries"]
    assert t["final_loss"] > 0  # Poisson loss of a finite step
    assert t["peak_host_rss_bytes"] > 0


def test_bench_command_writes_every_figure(tiny_store, cache_dir, tmp_path):
    started = time.perf_counter()
    report = _bench(tiny_store, tmp_path / "bench.json")
    wall = time.perf_counter() - started

    machine = report["machine"]
    import jax

    assert machine["device_count"] == jax.device_count() >= 1
    assert machine["backend"] == jax.default_backend() and machine["device_kind"]
    assert machine["jax_version"] == jax.__version__ and len(machine["devices"]) == machine["device_count"]
    assert machine["xla_flags"] == os.environ.get("XLA_FLAGS", "")
    assert report["config_name"] == "smoke" and report["config_path"].endswith("configs/smoke.py")
    assert report["overrides"] == [f"--config.data.store={tiny_store}"]

    t = report["training"]
    assert t["global_batch"] == 8 and t["clip_frames"] == 24 and t["steps"] == 3  # 2 mice x 4 clips
    _check_training(t, machine["device_count"])
    # the 3 timed steps all ran inside the command's wall time
    assert t["steps"] * t["step_seconds"]["min"] < wall
    assert t["clips_per_second"] > t["global_batch"] * t["steps"] / wall
    if machine["backend"] == "cpu":
        assert t["utilisation"] is None and t["peak_device_memory_bytes"] is None

    assert report["pipeline"]["clips_per_second"] > 0 and report["pipeline"]["process_batch"] == 8
    kernel = report["metric_kernel"]
    assert kernel["gb_per_second"] > 0 and kernel["bytes"] == 2 * 4 * 100 * 500 * 4
    inference = report["inference"]
    assert inference["trials_per_second"] > 0
    assert 0 < inference["trial_frames"] <= 300
    assert inference["output_shape"][:2] == [inference["trials_per_call"], inference["trial_frames"]]
    assert report["peak_host_rss_bytes"] >= t["peak_host_rss_bytes"]
    assert report["sweep"] is None


def test_training_flops_count_the_arithmetic_of_the_looped_cpu_forms(smoke_config, monkeypatch):
    """The CPU form runs convolutions of 32+ outputs in loops over chunks of frames, whose
    bodies XLA's cost analysis counts once; the step's FLOPs are those of the native form,
    whichever form runs."""
    from sensorium_jax.benchmarking.measure import measure_training
    from sensorium_jax.data.store import open_store
    from sensorium_jax.models import kernels

    monkeypatch.setattr(kernels, "PATCH_CHUNK_BYTES", 4096)  # many chunks, even on tiny frames
    store = open_store(smoke_config.data.store)
    counts = {}
    for form in ("folded", "native"):
        config = smoke_config.copy_and_resolve_references()
        config.model.core.channels = (32, 8)
        config.model.kernels = form
        counts[form] = measure_training(config, store, steps=1, warmup=1)["flops_per_step"]
    assert counts["folded"] == pytest.approx(counts["native"], rel=0.02)


def test_bench_sweep_gives_one_row_per_value(tiny_store, cache_dir, tmp_path):
    report = _bench(tiny_store, tmp_path / "sweep.json", "--sweep", "batch_size=1,2", "--inference_rounds", "0")
    assert report["inference"] is None  # skipped on request
    assert (tmp_path / "sweep.png").stat().st_size > 10_000  # the sweep's plot, next to the JSON

    sweep = report["sweep"]
    assert sweep["name"] == "batch_size" and sweep["key"] == "data.clips_per_mouse"
    assert [row["value"] for row in sweep["rows"]] == [1, 2]
    assert [row["training"]["global_batch"] for row in sweep["rows"]] == [2, 4]  # 2 mice
    for row in sweep["rows"]:
        _check_training(row["training"], report["machine"]["device_count"])
    small, large = (row["training"]["flops_per_step"] for row in sweep["rows"])
    assert 1.6 < large / small < 2.05  # twice the clips: nearly twice the work (the optimizer's is fixed)
    assert report["training"] is None


def test_running_out_of_memory_ends_with_what_to_change(capsys):
    import jax

    from sensorium_jax.errors import OUT_OF_MEMORY_EXIT, run_cli

    def step():
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 31975847824 bytes.\n(trace)")

    with pytest.raises(SystemExit) as stopped:
        run_cli(step)
    assert stopped.value.code == OUT_OF_MEMORY_EXIT
    message = capsys.readouterr().err
    assert message.startswith("error: out of memory (RESOURCE_EXHAUSTED: Out of memory allocating 31975847824 bytes.)")
    assert "data.clips_per_mouse" in message and "xla_cpu_enable_concurrency_optimized_scheduler" in message

    def broken():
        raise jax.errors.JaxRuntimeError("INTERNAL: something else")

    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):  # other failures keep their traceback
        run_cli(broken)


def test_flops_from_cost_analysis_count_a_dense_layer():
    """XLA's cost analysis, read as the bench reads it, against the analytic count of a dense
    layer: 2 * B * K * N multiply-adds plus B * N bias additions."""
    import jax
    import jax.numpy as jnp

    from sensorium_jax.benchmarking.timing import flops_from_cost_analysis

    b, k, n = 64, 96, 40
    compiled = jax.jit(lambda x, w, c: x @ w + c).lower(
        jnp.zeros((b, k)), jnp.zeros((k, n)), jnp.zeros(n)).compile()
    assert flops_from_cost_analysis(compiled.cost_analysis()) == pytest.approx(2 * b * k * n + b * n, rel=0.05)


def test_compile_counter_counts_recompilations():
    import jax
    import jax.numpy as jnp

    from sensorium_jax.benchmarking.measure import CompileCounter

    @jax.jit
    def counted_function(x):
        return x * 2 + 1

    before = CompileCounter.count("jit(counted_function)")
    for shape in (3, 3, 4, 3, 5):
        counted_function(jnp.ones(shape))
    assert CompileCounter.count("jit(counted_function)") - before == 3 == counted_function._cache_size()


def test_training_figures_match_a_timed_loop(smoke_config):
    """`measure_training`'s throughput against a separately built and timed loop of the same
    step (within a loose factor: 2 shared cores), and its figures against the call's wall time."""
    import jax

    from sensorium_jax.benchmarking.measure import measure_training
    from sensorium_jax.data.store import open_store
    from sensorium_jax.training.loop import build_training, device_batches
    from sensorium_jax.training.mesh import make_data_mesh

    store = open_store(smoke_config.data.store)
    steps = 6
    started = time.perf_counter()
    t = measure_training(smoke_config, store, steps=steps, warmup=1)
    wall = time.perf_counter() - started
    assert t["global_batch"] == 8 and t["steps"] == steps
    # every timed step, the compile and the warm-up step fit in the call
    assert steps * t["step_seconds"]["min"] + t["compile_seconds"] < wall
    assert t["clips_per_second"] > t["global_batch"] * steps / wall
    assert t["frames_per_second"] == pytest.approx(t["clips_per_second"] * 24)

    mesh = make_data_mesh()
    setup = build_training(smoke_config, store, mesh)
    state, batches = setup.state, device_batches(setup.dataset, mesh, smoke_config)
    state, metrics = setup.train_step(state, next(batches))  # compile
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps):
        state, metrics = setup.train_step(state, next(batches))
    jax.block_until_ready(metrics)
    timed = 8 * steps / (time.perf_counter() - started)
    assert timed / 3 < t["clips_per_second"] < timed * 3, (timed, t["clips_per_second"])


# --------------------------------------------------------------------------- CPU forms and flags


def test_factorized_forms_give_the_plain_convolutions_values_and_gradients(monkeypatch):
    """Every form `kernels.factorized_conv` may pick (per layer width in "folded") computes
    the 3D convolution's values and gradients, narrow and wide layers alike; the wide temporal
    layer's pixels in 3 blocks, the last one padded."""
    import jax
    import numpy as np

    from sensorium_jax.models import kernels

    monkeypatch.setattr(kernels, "TEMPORAL_BLOCK_PIXELS", 16)  # 42 pixels: 3 blocks
    wide = kernels.PATCH_PRODUCTS_MIN_OUTPUTS
    assert kernels.temporal_form("folded", wide, wide, 3) == "patches"
    assert kernels.temporal_form("folded", wide, 8, 3) == "folded"
    assert kernels.temporal_form("matmul", 8, 8, 3) == "matmul"
    assert kernels.temporal_form("native", wide, wide, 3) == "native"
    cases = [((1, 3, 3, 4, wide), "SAME"), ((3, 1, 1, wide, wide), "VALID"), ((3, 1, 1, 4, 4), "VALID"),
             ((1, 3, 3, wide, 8), "VALID")]
    for shape, padding in cases:
        kx, kw = jax.random.split(jax.random.key(sum(shape)))
        x = jax.random.normal(kx, (2, 5, 6, 7, shape[3]))
        w = 0.1 * jax.random.normal(kw, shape)

        def loss(x, w, impl):
            y = kernels.factorized_conv(x, w, impl, padding)
            return (y * jax.numpy.cos(y)).sum()

        plain = jax.value_and_grad(lambda x, w: loss(x, w, "native"), argnums=(0, 1))(x, w)
        for impl in ("folded", "matmul"):
            value, grads = jax.value_and_grad(lambda x, w: loss(x, w, impl), argnums=(0, 1))(x, w)
            np.testing.assert_allclose(value, plain[0], rtol=1e-4)
            for got, want in zip(grads, plain[1]):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(abs(want).max()))


def test_recurrent_patches_give_the_native_convolutions_values_and_gradients():
    """The GRU's patch form (its patches rebuilt in the backward pass) under a scan, as the
    recurrence runs it: same values and gradients as XLA's convolution."""
    import jax
    import numpy as np

    from sensorium_jax.models import kernels

    kx, kw = jax.random.split(jax.random.key(3))
    xs = jax.random.normal(kx, (4, 2, 5, 6, 3))  # [steps, N, H, W, C]
    w = 0.3 * jax.random.normal(kw, (3, 3, 3, 3))

    def loss(xs, w, impl):
        def step(h, x):
            h = jax.numpy.tanh(x + kernels.recurrent_conv(h, w, impl))
            return h, h
        return jax.lax.scan(step, jax.numpy.zeros_like(xs[0]), xs)[1].sum()

    want = jax.value_and_grad(lambda xs, w: loss(xs, w, "native"), argnums=(0, 1))(xs, w)
    got = jax.value_and_grad(lambda xs, w: loss(xs, w, "folded"), argnums=(0, 1))(xs, w)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_backend_flags_add_onednn_on_intel_and_keep_the_users_choice():
    from sensorium_jax import backend_flags as bf

    intel = {"machine": "x86_64", "vendor": "GenuineIntel"}
    env = {}
    assert bf.apply(env, **intel) == "--xla_cpu_use_onednn=true" and bf.onednn_enabled(env)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    bf.apply(env, **intel)
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8 --xla_cpu_use_onednn=true"
    env = {"XLA_FLAGS": "--xla_cpu_use_onednn=false"}
    assert bf.apply(env, **intel) == "--xla_cpu_use_onednn=false" and not bf.onednn_enabled(env)
    env = {bf.OPT_OUT_ENV: "0"}
    bf.apply(env, **intel)
    assert "XLA_FLAGS" not in env
    for machine, vendor in (("x86_64", "AuthenticAMD"), ("aarch64", "")):  # measured slower / absent there
        env = {}
        bf.apply(env, machine=machine, vendor=vendor)
        assert "XLA_FLAGS" not in env


def test_backend_flags_reach_xla_when_jax_was_imported_first():
    """XLA reads XLA_FLAGS when the first backend starts, not at `import jax`: flags set after
    importing jax still apply (an unknown flag set then proves XLA parses them), and XLA
    accepts the oneDNN flag the package sets on Intel CPUs."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SENSORIUM_JAX_XLA_DEFAULTS")}
    code = ("import os, jax; from sensorium_jax import backend_flags as bf; "
            "bf.apply(machine='x86_64', vendor='GenuineIntel'); print(os.environ['XLA_FLAGS']); "
            "print(float(jax.numpy.ones(3).sum()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--xla_cpu_use_onednn=true" in done.stdout and "3.0" in done.stdout
    code = "import os, jax; os.environ['XLA_FLAGS'] = '--xla_no_such_flag_here=1'; jax.numpy.zeros(1)"
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and "xla_no_such_flag_here" in bad.stderr


def test_bench_vs_torch_tiny_runs_both_sides_with_equal_parameter_counts(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "vs_torch.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_vs_torch.py", "--model", "all", "--tiny", "--steps", "2", "--warmup", "0",
         "--threads", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(out.read_text())
    assert [r["model"] for r in reports] == ["factorized", "gru", "dwiseneuro", "quickstart"]
    for r in reports:
        assert r["params_match"], (r["model"], r["jax"]["params"], r["torch"]["params"])
        for side in ("jax", "torch"):
            assert r[side]["threads"] == 1 and r[side]["peak_rss_bytes"] > 50 * 2**20
            assert r[side]["step_seconds"]["median"] > 0 and r[side]["clips_per_second"] > 0
        assert len(r["paired_speed_ratios"]) == 2 and r["speed_ratio"] > 0 and r["memory_ratio"] > 0
        assert f"{r['model']}:" in done.stdout and "speed ratio" in done.stdout
