#!/usr/bin/env bash
# The accelerator suite: every zoo model's training step at competition scale (float32 and
# bfloat16, remat off/on where the model has it), the input pipeline, the metric kernel next to
# a plain read, inference trials/s; writes OUT/suite.json and OUT/suite.md.
#
#   benchmarks/accelerator_suite.sh [OUT]            # one GPU, within ~8 minutes
#   benchmarks/accelerator_suite.sh --tiny [OUT]     # tiny shapes, on CPU in about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
tiny=()
if [[ "${1:-}" == "--tiny" ]]; then
  tiny=(--tiny)
  shift
fi
out="${1:-bench_suite}"
exec python -m sensorium_jax.bench --suite "${tiny[@]}" --out "$out"
