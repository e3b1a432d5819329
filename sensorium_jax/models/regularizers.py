"""Weight penalties of the SENSORIUM 2023 factorized baseline, as pure functions of the weights.

They follow neuralpredictors (`regularizers.LaplaceL2norm`, `DepthLaplaceL21d`, the Gaussian
readout's `feature_l1`), the library the reference baseline was trained with:

- spatial smoothness of the first layer's spatial filters: every (input, output) filter is
  convolved with the 3x3 Laplace kernel [[0, -1, 0], [-1, 4, -1], [0, -1, 0]] (zero padding 1,
  so border pixels count as next to zeros) and the summed squares are divided by the summed
  squares of the filters themselves (so the penalty does not shrink with the weights' scale);
- temporal smoothness of the first layer's temporal filters: the same ratio with the 1D kernel
  [-1, 4, -1] (zero padding 1). That kernel is the reference's (its taps sum to 2, so it is not a
  true second difference: it also penalises the filter's mean); kept for fidelity;
- readout sparsity: the sum of the absolute feature weights (the reference's `reduction="sum"`).

Sums run over all filters at once (one ratio per layer, not a mean of per-filter ratios).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

LAPLACE_2D = np.array([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], np.float32)
LAPLACE_1D = np.array([-1.0, 4.0, -1.0], np.float32)


def _filter_stack(kernel: jax.Array, receptive_axes: int) -> jax.Array:
    """[filters, *receptive] from a kernel laid out (*receptive, in, out)."""
    k = kernel.astype(jnp.float32)
    receptive = k.shape[:receptive_axes]
    return jnp.moveaxis(k.reshape(*receptive, -1), -1, 0)


def _correlate(filters: jax.Array, stencil: np.ndarray, padding: int) -> jax.Array:
    """Each filter [F, *k] correlated with `stencil` after zero-padding every side by `padding`."""
    rank = stencil.ndim
    x = filters[:, None]  # [F, 1, *k]
    w = jnp.asarray(stencil)[None, None]  # [1, 1, *s]
    return jax.lax.conv_general_dilated(x, w, (1,) * rank, [(padding, padding)] * rank)


def _normalised_energy(filters: jax.Array, stencil: np.ndarray, padding: int) -> jax.Array:
    """sum(stencil * filters)^2 / sum(filters^2): scale-free roughness of a filter bank."""
    rough = jnp.sum(jnp.square(_correlate(filters, stencil, padding)))
    return rough / jnp.sum(jnp.square(filters))


def laplace_l2_norm(spatial_kernel: jax.Array, padding: int = 1) -> jax.Array:
    """neuralpredictors' `LaplaceL2norm` of a spatial kernel [1, kh, kw, in, out] (DHWIO) or
    [kh, kw, in, out]: every (in, out) filter convolved with the 3x3 Laplace kernel."""
    kernel = spatial_kernel[0] if spatial_kernel.ndim == 5 else spatial_kernel
    return _normalised_energy(_filter_stack(kernel, 2), LAPLACE_2D, padding)


def temporal_laplace_l2_norm(temporal_kernel: jax.Array, padding: int = 1) -> jax.Array:
    """neuralpredictors' `DepthLaplaceL21d` of a temporal kernel [kt, 1, 1, in, out] (DHWIO)
    or [kt, in, out]: every (in, out) filter convolved with [-1, 4, -1]."""
    kernel = temporal_kernel.reshape(temporal_kernel.shape[0], *temporal_kernel.shape[-2:])
    return _normalised_energy(_filter_stack(kernel, 1), LAPLACE_1D, padding)


def feature_l1(features: jax.Array, neuron_mask: np.ndarray | jax.Array) -> jax.Array:
    """Sum of |feature weights| [mice, Nmax, C] over real neurons (the padding rows excluded)."""
    mask = jnp.asarray(neuron_mask, bool)[..., None]
    return jnp.sum(jnp.where(mask, jnp.abs(features.astype(jnp.float32)), 0.0))
