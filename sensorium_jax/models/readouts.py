"""Per-mouse Gaussian readouts, all mice stacked into one module.

Every per-neuron parameter is padded to Nmax (the largest mouse) and stacked over mice; a batch
gathers its rows by the `mouse` ids, so one compiled function serves any mix of mice. Padded
neurons produce finite values that the loss masks out.

Grid convention (as torch's `grid_sample` with `align_corners=True`, used by the reference
implementation): positions lie in [-1, 1]^2 as (x, y); -1 is the centre of the first pixel,
+1 the centre of the last.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sensorium_jax.data.card import DatasetCard
from sensorium_jax.models import regularizers
from sensorium_jax.models.initializers import uniform
from sensorium_jax.models.shifter import MLPShifter, StackedMLP


class ReadoutConstant(nnx.Variable):
    """Data-derived, non-trainable arrays (normalized coordinates); they sit in the `rest` state."""


def bilinear_windows(features: jax.Array, grid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The 2 x 2 pixel windows around per-frame positions and their bilinear weights.

    features [B, T, H, W, C]; grid [B, T, N, 2] as (x, y), [-1, 1] spanning the map. Returns
    windows [B, T, N, 2, 2, C] and weights [B, T, N, 2, 2]. Outside the map the features are
    zero, as in the reference's `grid_sample(..., padding_mode="zeros", align_corners=True)`:
    the map gets a border of zero pixels, so a position the shifter moves past the edge reads
    only its corners still on the map, and one further out has zero weights. Each window is
    one contiguous slice (one gather; a windowed scatter-add in the backward pass): faster on
    CPU than gathering the four corners one pixel at a time.
    """
    b, t, h, w, c = features.shape
    bordered = jnp.pad(features, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
    grid = grid.astype(jnp.float32)
    x = (grid[..., 0] + 1.0) * 0.5 * (w - 1)
    y = (grid[..., 1] + 1.0) * 0.5 * (h - 1)
    x0, y0 = jnp.floor(x), jnp.floor(y)
    wx, wy = x - x0, y - y0
    # a window starting one pixel before the map up to its last pixel touches the map
    touches = (x0 >= -1) & (x0 <= w - 1) & (y0 >= -1) & (y0 <= h - 1)
    top = jnp.clip(y0, -1, h - 1).astype(jnp.int32) + 1  # in the bordered map
    left = jnp.clip(x0, -1, w - 1).astype(jnp.int32) + 1
    rows = jnp.stack([1 - wy, wy], axis=-1)[..., :, None] * jnp.stack([1 - wx, wx], axis=-1)[..., None, :]
    weights = jnp.where(touches[..., None, None], rows, 0.0)

    def windows_of(image: jax.Array, top: jax.Array, left: jax.Array) -> jax.Array:
        return jax.vmap(lambda i, j: jax.lax.dynamic_slice(image, (i, j, 0), (2, 2, c)))(top, left)

    windows = jax.vmap(jax.vmap(windows_of))(bordered, top, left)
    return windows, weights.astype(features.dtype)


def bilinear_sample(features: jax.Array, grid: jax.Array) -> jax.Array:
    """Bilinear interpolation of feature maps [B, T, H, W, C] at per-frame positions grid
    [B, T, N, 2] (`bilinear_windows`): [B, T, N, C]. Works under jit and vmap."""
    windows, weights = bilinear_windows(features, grid)
    return jnp.einsum("btnijc,btnij->btnc", windows, weights)


def sample_and_weigh(
    features: jax.Array, grid: jax.Array, weights: jax.Array, chunk: int | None = None
) -> jax.Array:
    """out[b, t, n] = bilinear sample of features[b, t] at grid[b, t, n] . weights[b, n].

    features [B, T, H, W, C], grid [B, T, N, 2], weights [B, N, C] -> [B, T, N]. The sampled
    windows [B, T, N, 2, 2, C] are the memory peak (a competition-scale step: 56 clips x 62
    frames x 8000 neurons x 128 channels, tens of GB with their gradient). With `chunk`,
    neurons go through `lax.map` in groups of `chunk`, each group rematerialized in the
    backward pass, so the peak shrinks by N / chunk at the cost of a sequential loop.
    """
    n = grid.shape[2]

    def dense(features: jax.Array, grid: jax.Array, weights: jax.Array) -> jax.Array:
        windows, corners = bilinear_windows(features, grid)
        return jnp.einsum("btnijc,btnij,bnc->btn", windows, corners, weights.astype(features.dtype))

    if not chunk or chunk >= n:
        return dense(features, grid, weights)
    k = -(-n // chunk)
    pad = k * chunk - n
    grid = jnp.pad(grid, ((0, 0), (0, 0), (0, pad), (0, 0)))
    weights = jnp.pad(weights, ((0, 0), (0, pad), (0, 0)))
    b, t = grid.shape[:2]
    grid_chunks = jnp.moveaxis(grid.reshape(b, t, k, chunk, 2), 2, 0)  # [K, B, T, chunk, 2]
    weight_chunks = jnp.moveaxis(weights.reshape(b, k, chunk, -1), 1, 0)  # [K, B, chunk, C]
    body = jax.checkpoint(dense)
    out = jax.lax.map(lambda gw: body(features, *gw), (grid_chunks, weight_chunks))  # [K, B, T, chunk]
    return jnp.moveaxis(out, 0, 2).reshape(b, t, k * chunk)[:, :, :n]


def inverse_elu1(rate: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """z with elu(z) + 1 == rate (rates clipped at `floor`): biases start at the mean rate."""
    rate = np.maximum(np.asarray(rate, np.float64), floor)
    return np.where(rate >= 1.0, rate - 1.0, np.log(rate)).astype(np.float32)


def _normalized_coordinates(card: DatasetCard, dims: int) -> np.ndarray:
    """Per mouse: centre the cortical coordinates and divide by the largest absolute value."""
    out = np.zeros((len(card.mice), card.max_neurons, dims), np.float32)
    for i, m in enumerate(card.mice):
        xyz = np.asarray(m.coordinates, np.float64)[:, :dims]
        xyz = xyz - xyz.mean(axis=0, keepdims=True)
        scale = np.abs(xyz).max()
        out[i, : m.n_neurons] = xyz / (scale if scale > 0 else 1.0)
    return out


def _padded(values: list[np.ndarray], n_max: int) -> np.ndarray:
    out = np.zeros((len(values), n_max), np.float32)
    for i, v in enumerate(values):
        out[i, : len(v)] = v
    return out


class GaussianReadout(nnx.Module):
    """Gaussian readout with positions predicted from cortical coordinates (Lurz et al., 2021).

    Per mouse: an MLP (dims -> hidden -> 2, ELU then tanh) maps normalized coordinates to each
    neuron's mean position mu. Per neuron: a 2x2 sigma (or diagonal), feature weights [C] and
    a bias. Training samples positions mu + sigma @ eps per frame; evaluation uses mu.
    `centered_positions` starts every mu at the centre (the MLP's last layer at zero).
    `neuron_chunk` bounds the memory of the sampling step (see `sample_and_weigh`).
    `gamma_readout` weighs the L1 penalty on the feature weights (`regularizer`).
    """

    def __init__(
        self,
        card: DatasetCard,
        in_channels: int,
        *,
        position_inputs: int = 2,
        position_hidden: int = 30,
        init_sigma: float = 0.1,
        full_sigma: bool = True,
        neuron_chunk: int | None = None,
        centered_positions: bool = False,
        gamma_readout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        if not 1 <= position_inputs <= 3:
            raise ValueError(f"position_inputs must be 1, 2 or 3, got {position_inputs}")
        n_mice, n_max = len(card.mice), card.max_neurons
        self.full_sigma = full_sigma
        self.gamma_readout = float(gamma_readout)
        self.n_neurons = tuple(int(n) for n in card.n_neurons)  # static: no state, old checkpoints load
        self.neuron_chunk = int(neuron_chunk) if neuron_chunk else None
        self.coordinates = ReadoutConstant(jnp.asarray(_normalized_coordinates(card, position_inputs)))
        # centered_positions: every neuron starts at the screen centre and the map unfolds
        # along the gradient, so its orientation comes from the data. A random map starts at a
        # random orientation, and one that starts mirrored cannot flip through the collapsed
        # map (measured on the tiny preset: 1 mouse in 2 stuck mirrored at 0.03-0.07 in 2 of 3
        # seeds; none with centred positions).
        self.position_mlp = StackedMLP(
            n_mice, (position_inputs, position_hidden, 2),
            hidden_activation=jax.nn.elu, final_activation=jnp.tanh,
            zero_last_layer=centered_positions, rngs=rngs,
        )
        sigma_shape = (n_mice, n_max, 2, 2) if full_sigma else (n_mice, n_max, 2)
        if full_sigma:  # the reference draws the full matrix uniformly in [-s, s]
            sigma = uniform(init_sigma)(rngs.params(), sigma_shape)
        else:
            sigma = jnp.full(sigma_shape, init_sigma, jnp.float32)
        self.sigma = nnx.Param(sigma)
        self.features = nnx.Param(jnp.full((n_mice, n_max, in_channels), 1.0 / in_channels, jnp.float32))
        means = [inverse_elu1(m.mean_response) for m in card.mice]
        self.bias = nnx.Param(jnp.asarray(_padded(means, n_max)))
        self.rngs = rngs["readout"].fork()

    def positions(self) -> jax.Array:
        """Mean positions of all mice's neurons, [M, Nmax, 2] in [-1, 1]."""
        return self.position_mlp.all(self.coordinates[...])

    def regularizer(self) -> jax.Array:
        """gamma_readout * sum |feature weights| over every mouse's real neurons (the reference's
        `FullGaussian2d.regularizer` with its default `reduction="sum"`); 0 when gamma is 0."""
        if not self.gamma_readout:
            return jnp.zeros((), jnp.float32)
        n_max = self.features.shape[1]
        mask = np.arange(n_max)[None, :] < np.asarray(self.n_neurons)[:, None]
        return self.gamma_readout * regularizers.feature_l1(self.features[...], mask)

    def grid(self, mouse: jax.Array, shift: jax.Array | None, frames: int, *, train: bool) -> jax.Array:
        """[B, frames, Nmax, 2] positions one call reads: mu, plus sigma @ noise in training
        (clipped to the map), plus the shift. Its own method so that readouts built on this one
        (`hierarchical_readout`) read at the same positions with the same draws."""
        mu = self.positions()[mouse]  # [B, N, 2]
        grid = jnp.broadcast_to(mu[:, None], (mu.shape[0], frames, *mu.shape[1:]))
        if train:
            eps = jax.random.normal(self.rngs(), grid.shape, jnp.float32)
            sigma = self.sigma[...][mouse]
            if self.full_sigma:
                grid = grid + jnp.einsum("bnij,btnj->btni", sigma, eps)
            else:
                grid = grid + sigma[:, None] * eps
            grid = jnp.clip(grid, -1.0, 1.0)
        if shift is not None:
            grid = grid + shift[:, :, None, :]
        return grid

    def __call__(
        self,
        features: jax.Array,
        mouse: jax.Array,
        shift: jax.Array | None = None,
        *,
        train: bool,
    ) -> jax.Array:
        """features [B, T, H, W, C], mouse [B], shift [B, T, 2] -> pre-activation [B, T, Nmax]."""
        grid = self.grid(mouse, shift, features.shape[1], train=train)
        weights = self.features[...][mouse]  # [B, N, C]
        out = sample_and_weigh(features.astype(jnp.float32), grid, weights, self.neuron_chunk)
        return out + self.bias[...][mouse][:, None, :]


def readout_and_shifter(
    config: ml_collections.ConfigDict, card: DatasetCard, in_channels: int, rngs: nnx.Rngs
) -> tuple[GaussianReadout, MLPShifter | None]:
    """The Gaussian readout and (if enabled) the shifter that `config.readout` and
    `config.shifter` describe; shared by every model with a Gaussian readout."""
    ro = config.readout
    readout = GaussianReadout(
        card,
        in_channels,
        position_inputs=ro.position_inputs,
        position_hidden=ro.position_hidden,
        init_sigma=ro.init_sigma,
        full_sigma=ro.full_sigma,
        neuron_chunk=ro.neuron_chunk,
        centered_positions=bool(ro.centered_positions),
        # a model outside this package may share this block with a readout section from before
        # the option: no penalty then (the baseline's value)
        gamma_readout=float(ro.get("gamma_readout", 0.0)),
        rngs=rngs,
    )
    shifter = None
    if config.shifter.enabled:
        shifter = MLPShifter(
            len(card.mice), tuple(config.shifter.hidden), zero_init=bool(config.shifter.zero_init), rngs=rngs,
        )
    return readout, shifter
