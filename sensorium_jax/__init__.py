"""sensorium_jax: JAX/Flax digital twins of mouse visual cortex."""

__version__ = "0.1.0"
