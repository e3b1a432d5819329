"""The rotation-equivariant 2D core of the SENSORIUM 2023 GRU baseline (Ecker et al., 2018).

Every filter is a combination of 2D Hermite functions; its rotations are the same combination
with the coefficients rotated analytically (each pair of Hermite functions of angular order m
turns by m times the angle), so all rotations share one set of weights. A layer of C channels
computes each channel in every one of R rotations: R x C feature maps, rotation-major (map
r * C + c is channel c in rotation r). A hidden layer's rotated copies also see their inputs'
rotation groups cyclically shifted, so rotating the image by 360 / R degrees rotates every
map and shifts the rotation groups by one: the core is equivariant to rotations by multiples
of 360 / R degrees (exactly for 90 degrees, which maps the square sampling grid onto itself).

As neuralpredictors' `RotationEquivariant2dCore` with the GRU baseline's settings: Hermite
filters sampled at `upsampling` (2) times the kernel's resolution and summed over 2 x 2 blocks;
the first convolution unpadded ("VALID"), the hidden ones zero-padded by kernel // 2 ("SAME");
no convolution bias; BatchNorm per channel with its statistics and affine parameters shared
across rotations; ELU after every layer but the last (`final_nonlinearity=False`); only the
last layer goes to the GRU (`stack=-1`). Regularisers (`regularizer()`): `gamma_input` times
the normalised Laplace penalty of the first layer's filters (all rotations; sum of squared
3 x 3 Laplacians, zero-padded by 1, over the sum of squared weights) plus `gamma_hidden` times
the group sparsity of the hidden layers (per layer the mean over (input, output) maps of each
filter's spatial L2 norm, averaged over the hidden layers).

Parameter layout, as in the reference (for importing a PyTorch state dict one to one; GRU
baseline: 3 input channels (video + 2 behaviour maps), hidden_channels 8, num_rotations 8,
input_kern 9, hidden_kern 7, layers 4, n(k) = k (k + 1) / 2 Hermite functions per filter):

    reference (torch)                                         here (core.features[l]...)
    features.layer0.hermite_conv.coeffs            [45, 3, 8]  hermite_conv.coeffs  same layout
    features.layer{1,2,3}.hermite_conv.coeffs      [28, 64, 8] hermite_conv.coeffs  same layout
    features.layer{l}.norm.batch_norm.weight       [8]         norm.scale
    features.layer{l}.norm.batch_norm.bias         [8]         norm.bias
    features.layer{l}.norm.batch_norm.running_mean [8]         norm.mean
    features.layer{l}.norm.batch_norm.running_var  [8]         norm.var
    features.layer{l}.norm.batch_norm.num_batches_tracked []   (not used)
    features.layer0.hermite_conv.rotate_hermite.H  [45, 18, 18] fixed basis (requires_grad False);
    features.layer{1,2,3}...rotate_hermite.H       [28, 14, 14] recomputed here (`hermite_basis`)
    features.layer0...rotate_hermite.Rs.{0..7}     [45, 45]     fixed rotations (requires_grad
    features.layer{1,2,3}...rotate_hermite.Rs.{0..7} [28, 28]   False); recomputed here
    _input_weights_regularizer.laplace.filter      [1, 1, 3, 3] fixed Laplace filter

Trainable scalars: 45*3*8 + 3*(28*64*8) + 4*(8 + 8) = 44,152 (torch's `parameters()` also
counts the fixed H and Rs: 66,060 more). The coefficient layout is [n(k), inputs, outputs]
with inputs rotation-major (R x C of the previous layer) in hidden layers; the assembled filter
bank is HWIO [k, k, inputs, R * outputs], the transpose of the reference's OIHW
`weights_all_rotations`.

Known differences: BatchNorm's running variance is the biased batch variance (flax), the
reference keeps the unbiased one; filters are assembled with the fixed rotation and basis
matrices multiplied together first (same sums, float rounding differs at ~1e-7).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensorium_jax.models import kernels, regularizers
from sensorium_jax.models.geometry import SpatialLayer

# --------------------------------------------------------------------------- Hermite basis


class HermiteBasis(NamedTuple):
    """Sampled 2D Hermite functions of one filter size, in the reference's order.

    `functions` [n, S, S] (unit L2 norm each; rows are y, columns x), `order` [n] the angular
    order m of each, `kind` per function: "z" (rotationally symmetric), "r" / "i" (the cosine /
    sine member of a pair of order m, "r" directly before its "i").
    """

    functions: np.ndarray
    order: np.ndarray
    kind: tuple[str, ...]


def _radial_coefficients(m: int, nu: int) -> np.ndarray:
    """Coefficients in r^2 (lowest power first) of the radial polynomial of order (m, nu):
    (m+nu)! nu! (-2)^(nu-k) / ((m+k)! k! (nu-k)!), a multiple of the Laguerre L_nu^m(r^2/2)."""
    f = math.factorial
    return np.array([f(m + nu) * f(nu) * (-2.0) ** (nu - k) / (f(m + k) * f(k) * f(nu - k)) for k in range(nu + 1)])


def _orders(size: int) -> tuple[list[int], list[int], list[str]]:
    """(m, nu, kind) of every basis function: rank r = m + 2 nu runs over 0..size-1; per rank
    the symmetric one (even ranks) first, then cosine/sine pairs by increasing m."""
    ms, nus, kinds = [], [], []
    for rank in range(size):
        orders = sorted(abs(rank - 2 * j) for j in range(rank + 1))
        ms += orders
        nus += [(rank - m) // 2 for m in orders]
        kinds += (["z"] if rank % 2 == 0 else []) + ["r", "i"] * ((rank + 1) // 2)
    return ms, nus, kinds


@functools.lru_cache(maxsize=None)
def hermite_basis(size: int, upsampling: int) -> HermiteBasis:
    """The Hermite functions of a `size`-tap filter, sampled at `size * upsampling` points per
    axis over [-x, x], x = 2 sqrt(size) (1 - 1 / points), as the reference samples them.

    Positive normalising constants of the reference are left out: each function is scaled to
    unit L2 norm on the grid at the end, which they do not change."""
    points = size * upsampling
    xmax = 2.0 * np.sqrt(size) * (1.0 - 1.0 / points)
    x = np.linspace(-xmax, xmax, points)
    y = x[:, None]
    radsq = y**2 + x[None, :] ** 2
    theta = np.arctan2(y, x[None, :])
    envelope = np.exp(-radsq / 4.0)
    ms, nus, kinds = _orders(size)
    functions = np.empty((len(ms), points, points))
    for n, (m, nu, kind) in enumerate(zip(ms, nus, kinds)):
        radial = envelope * radsq ** (m / 2.0) * np.polynomial.polynomial.polyval(radsq, _radial_coefficients(m, nu))
        functions[n] = radial * (np.sin(m * theta) if kind == "i" else np.cos(m * theta))
    functions /= np.sqrt(np.sum(functions**2, axis=(1, 2), keepdims=True))
    functions.setflags(write=False)
    order = np.asarray(ms)
    order.setflags(write=False)
    return HermiteBasis(functions, order, tuple(kinds))


def rotation_matrix(basis: HermiteBasis, angle: float) -> np.ndarray:
    """[n, n]: coefficients -> the coefficients of the filter turned by `angle`: each (r, i)
    pair of order m by the 2 x 2 rotation of angle m * angle, symmetric functions unchanged."""
    n = len(basis.kind)
    rot = np.zeros((n, n))
    for j, (kind, m) in enumerate(zip(basis.kind, basis.order)):
        if kind == "z":
            rot[j, j] = 1.0
        elif kind == "r":
            c, s = np.cos(m * angle), np.sin(m * angle)
            rot[j : j + 2, j : j + 2] = [[c, s], [-s, c]]
    return rot


def downsample(weights: np.ndarray, factor: int) -> np.ndarray:
    """[..., S, S] -> [..., S / factor, S / factor]: sums of factor x factor blocks."""
    *lead, s, _ = weights.shape
    k = s // factor
    return weights.reshape(*lead, k, factor, k, factor).sum(axis=(-3, -1))


@functools.lru_cache(maxsize=None)
def rotated_bases(size: int, upsampling: int, rotations: int) -> np.ndarray:
    """[R, n, size, size]: basis function n of the filter in rotation r (angle 2 pi r / R), so
    that filter_r = sum_n coeffs[n] * bases[r, n]; the reference's R_r and H in one constant,
    downsampled to the kernel's resolution (the block sum is linear, so it commutes)."""
    basis = hermite_basis(size, upsampling)
    small = downsample(basis.functions, upsampling)  # [n, k, k]
    mats = np.stack([rotation_matrix(basis, 2 * np.pi * r / rotations) for r in range(rotations)])
    out = np.einsum("rnm,nhw->rmhw", mats, small)
    out.setflags(write=False)
    return out


def n_coefficients(size: int) -> int:
    """Hermite functions per filter of `size` taps: size (size + 1) / 2."""
    return size * (size + 1) // 2


def input_rotation_index(in_features: int, rotations: int) -> np.ndarray:
    """[R, I]: the input map that rotation r's filters apply to input slot j: the rotation
    groups of a hidden layer's input shifted by r, (j - r * I / R) mod I."""
    group = in_features // rotations
    j = np.arange(in_features)
    return (j[None, :] - group * np.arange(rotations)[:, None]) % in_features


def filter_bank(coeffs: jax.Array, bases: np.ndarray, first_layer: bool) -> jax.Array:
    """HWIO filters of every rotation, [k, k, I, R * O] (rotation-major outputs), from Hermite
    coefficients [n, I, O]; hidden layers shift their inputs' rotation groups per rotation."""
    r, _, k, _ = bases.shape
    _, i, o = coeffs.shape
    b = jnp.asarray(bases, coeffs.dtype)
    if first_layer:
        w = jnp.einsum("rnhw,nio->hwiro", b, coeffs)
    else:
        shifted = jnp.take(coeffs, jnp.asarray(input_rotation_index(i, r)), axis=1)  # [n, R, I, O]
        w = jnp.einsum("rnhw,nrio->hwiro", b, shifted)
    return w.reshape(k, k, i, r * o)


# --------------------------------------------------------------------------- regularisers

def group_sparsity(weights: jax.Array) -> jax.Array:
    """Mean over (input, output) maps of each HWIO filter's spatial L2 norm."""
    return jnp.mean(jnp.sqrt(jnp.sum(weights**2, axis=(0, 1))))


# --------------------------------------------------------------------------- layers


class HermiteConv2D(nnx.Module):
    """Convolution whose filters, in R rotations, come from one set of Hermite coefficients."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: int,
        *,
        rotations: int,
        upsampling: int,
        first_layer: bool,
        padding: str,
        init_std: float,
        kernels_impl: str = "native",
        rngs: nnx.Rngs,
    ):
        if not first_layer and in_features % rotations:
            raise ValueError(f"a hidden layer's {in_features} inputs are not {rotations} rotation groups")
        shape = (n_coefficients(kernel), in_features, out_features)
        self.coeffs = nnx.Param(init_std * jax.random.normal(rngs.params(), shape, jnp.float32))
        self.kernel = int(kernel)
        self.rotations = int(rotations)
        self.upsampling = int(upsampling)
        self.first_layer = bool(first_layer)
        self.padding = padding
        self.kernels = kernels.check(kernels_impl)

    def weights_all_rotations(self) -> jax.Array:
        """The filter bank [k, k, I, R * O], built once per call of the layer."""
        bases = rotated_bases(self.kernel, self.upsampling, self.rotations)
        return filter_bank(self.coeffs[...], bases, self.first_layer)

    def __call__(self, x: jax.Array, dtype: jnp.dtype) -> jax.Array:
        """[N, H, W, I] -> [N, H', W', R * O] in float32, the convolution run in `dtype`."""
        w = self.weights_all_rotations().astype(dtype)
        return kernels.spatial_conv2d(x.astype(dtype), w, self.padding, self.kernels).astype(jnp.float32)


class RotationEquivariantLayer(nnx.Module):
    """Hermite convolution, BatchNorm shared across rotations, optional ELU."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: int,
        *,
        rotations: int,
        upsampling: int,
        first_layer: bool,
        padding: str,
        init_std: float,
        bn_momentum: float,
        nonlinearity: bool,
        compute_dtype: jnp.dtype,
        kernels_impl: str = "native",
        rngs: nnx.Rngs,
    ):
        self.hermite_conv = HermiteConv2D(
            in_features, out_features, kernel, rotations=rotations, upsampling=upsampling,
            first_layer=first_layer, padding=padding, init_std=init_std, kernels_impl=kernels_impl, rngs=rngs,
        )
        self.norm = nnx.BatchNorm(out_features, momentum=bn_momentum, epsilon=1e-5, rngs=rngs)
        self.rotations = int(rotations)
        self.nonlinearity = bool(nonlinearity)
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        y = self.hermite_conv(x, self.compute_dtype)
        *lead, maps = y.shape
        # [..., R, C]: one set of statistics and affine parameters per channel, all rotations
        y = self.norm(y.reshape(*lead, self.rotations, maps // self.rotations), use_running_average=not train)
        y = y.reshape(*lead, maps)
        return jax.nn.elu(y) if self.nonlinearity else y


class RotationEquivariantCore(nnx.Module):
    """Per-image rotation-equivariant stack: [..., H, W, Cin] -> [..., H', W', R * C_last].

    Leading axes (batch, frames) are folded into one batch, so each layer's filter bank is
    built once per call, whatever the number of frames.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        input_kernel: int,
        hidden_kernel: int,
        *,
        rotations: int = 8,
        upsampling: int = 2,
        input_padding: str = "VALID",
        init_std: float = 0.1,
        bn_momentum: float = 0.1,
        final_nonlinearity: bool = False,
        gamma_input: float = 0.0,
        gamma_hidden: float = 0.0,
        compute_dtype: str | jnp.dtype = "float32",
        kernels_impl: str = "native",
        rngs: nnx.Rngs,
    ):
        kernels.padding_pairs(1, input_padding)  # fail early on a bad name
        if not channels:
            raise ValueError("the core needs at least one layer")
        if int(hidden_kernel) % 2 == 0 and len(channels) > 1:
            raise ValueError(f"hidden kernels pad by kernel // 2 on each side: they must be odd, got {hidden_kernel}")
        r = int(rotations)
        ins = (int(in_channels), *(int(c) * r for c in channels[:-1]))
        sizes = (int(input_kernel), *(int(hidden_kernel),) * (len(channels) - 1))
        paddings = (input_padding, *("SAME",) * (len(channels) - 1))
        last = len(channels) - 1
        self.features = nnx.List(
            [
                RotationEquivariantLayer(
                    ci, int(co), k, rotations=r, upsampling=int(upsampling), first_layer=(l == 0),
                    padding=pad, init_std=float(init_std), bn_momentum=float(bn_momentum),
                    nonlinearity=(l < last or bool(final_nonlinearity)),
                    compute_dtype=jnp.dtype(compute_dtype), kernels_impl=kernels_impl, rngs=rngs,
                )
                for l, (ci, co, k, pad) in enumerate(zip(ins, channels, sizes, paddings))
            ]
        )
        self.layer_geometry = tuple(zip(sizes, paddings))
        self.out_channels = int(channels[-1]) * r
        self.gamma_input = float(gamma_input)
        self.gamma_hidden = float(gamma_hidden)

    def spatial_layers(self) -> tuple[SpatialLayer, ...]:
        """The stride-1 spatial convolutions between the input and the feature map."""
        return self.layer_geometry

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        lead = x.shape[:-3]
        y = x.reshape(-1, *x.shape[-3:])
        for layer in self.features:
            y = layer(y, train=train)
        return y.reshape(*lead, *y.shape[1:])

    def laplace(self) -> jax.Array:
        """Normalised Laplace penalty (`LaplaceL2norm`) of the first layer's filters, all
        rotations."""
        return regularizers.laplace_l2_norm(self.features[0].hermite_conv.weights_all_rotations())

    def group_sparsity(self) -> jax.Array:
        """Group sparsity of the hidden layers' filters, averaged over those layers."""
        hidden = [group_sparsity(layer.hermite_conv.weights_all_rotations()) for layer in self.features[1:]]
        return sum(hidden, jnp.zeros((), jnp.float32)) / max(len(hidden), 1)

    def regularizer(self) -> jax.Array:
        """gamma_hidden * group sparsity + gamma_input * Laplace, as the reference core adds
        to the loss; a zero weight skips its term."""
        penalty = jnp.zeros((), jnp.float32)
        if self.gamma_hidden:
            penalty += self.gamma_hidden * self.group_sparsity()
        if self.gamma_input:
            penalty += self.gamma_input * self.laplace()
        return penalty
