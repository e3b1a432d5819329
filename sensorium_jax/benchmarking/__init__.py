"""Throughput measurements behind `python -m sensorium_jax.bench`."""
