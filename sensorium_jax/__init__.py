"""sensorium_jax: JAX/Flax digital twins of mouse visual cortex."""

__version__ = "0.1.0"


def load(path):
    """`sensorium_jax.load(workdir_or_checkpoint)` -> a Predictor (see sensorium_jax.inference)."""
    from sensorium_jax.inference import load as _load

    return _load(path)
