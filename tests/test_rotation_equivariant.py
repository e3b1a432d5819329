"""The GRU baseline's rotation-equivariant core: Hermite filters against an independent
construction, exact equivariance to 90-degree rotations, the reference's parameter count and
regularisers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import eval_genlaguerre
from test_models import make_card

from sensorium_jax.models import build_model, count_parameters, default_model_config
from sensorium_jax.models.rotation_equivariant import (
    HermiteConv2D,
    RotationEquivariantCore,
    hermite_basis,
)

UP = 2  # the reference's upsampling of the Hermite filters


def laguerre_basis(size: int, upsampling: int) -> list[tuple[int, str, np.ndarray]]:
    """(m, kind, function) of the 2D Hermite functions, built as Laguerre-Gaussian functions:
    exp(-r^2/4) r^m (-1)^nu L_nu^m(r^2/2) cos(m theta) or sin(m theta), rank m + 2 nu < size,
    per rank the symmetric one then pairs by increasing m, unit norm on the grid."""
    points = size * upsampling
    xmax = 2.0 * math.sqrt(size) * (1.0 - 1.0 / points)
    x = np.linspace(-xmax, xmax, points)
    yy, xx = np.meshgrid(x, x, indexing="ij")
    rho, theta = xx**2 + yy**2, np.arctan2(yy, xx)
    out = []
    for rank in range(size):
        for m in range(rank % 2, rank + 1, 2):
            nu = (rank - m) // 2
            radial = np.exp(-rho / 4) * np.sqrt(rho) ** m * (-1) ** nu * eval_genlaguerre(nu, m, rho / 2)
            parts = [("z", np.cos(m * theta))] if m == 0 else [("r", np.cos(m * theta)), ("i", np.sin(m * theta))]
            for kind, angular in parts:
                f = radial * angular
                out.append((m, kind, f / np.linalg.norm(f)))
    return out


def block_sum(f: np.ndarray, factor: int) -> np.ndarray:
    """Sum over factor x factor blocks, written as loops."""
    k = f.shape[0] // factor
    return np.array([[f[a * factor:(a + 1) * factor, b * factor:(b + 1) * factor].sum() for b in range(k)]
                     for a in range(k)])


@pytest.mark.parametrize("size", [3, 7, 9])
def test_hermite_basis_equals_laguerre_gaussians(size):
    basis = hermite_basis(size, UP)
    want = laguerre_basis(size, UP)
    assert len(basis.kind) == len(want) == size * (size + 1) // 2
    assert list(basis.kind) == [kind for _, kind, _ in want]
    np.testing.assert_array_equal(basis.order, [m for m, _, _ in want])
    np.testing.assert_allclose(basis.functions, np.stack([f for _, _, f in want]), atol=1e-12)


@pytest.mark.parametrize("index", [0, 3, 4, 11, 40])
def test_filters_of_every_rotation_follow_the_analytic_rotation(index):
    """One coefficient set: rotation r's filter is cos(m a) f_r - sin(m a) f_i (coefficient on
    an 'r' function) or sin(m a) f_r + cos(m a) f_i (on an 'i' function), a = 2 pi r / R, then
    block-summed to the 9 x 9 kernel; symmetric functions do not turn."""
    size, rotations = 9, 8
    want = laguerre_basis(size, UP)
    m, kind, _ = want[index]
    conv = HermiteConv2D(1, 1, size, rotations=rotations, upsampling=UP, first_layer=True,
                         padding="VALID", init_std=0.1, rngs=nnx.Rngs(0))
    conv.coeffs[...] = jnp.zeros_like(conv.coeffs[...]).at[index, 0, 0].set(1.0)
    bank = np.asarray(conv.weights_all_rotations())  # [9, 9, 1, R]
    assert bank.shape == (size, size, 1, rotations)
    for r in range(rotations):
        c, s = math.cos(m * 2 * math.pi * r / rotations), math.sin(m * 2 * math.pi * r / rotations)
        if kind == "z":
            f = want[index][2]
        elif kind == "r":
            f = c * want[index][2] - s * want[index + 1][2]
        else:
            f = s * want[index - 1][2] + c * want[index][2]
        np.testing.assert_allclose(bank[:, :, 0, r], block_sum(f, UP), atol=1e-6)


def random_core(rotations=8, channels=(2, 3, 2)) -> RotationEquivariantCore:
    """A small core with random BatchNorm statistics and affine parameters."""
    core = RotationEquivariantCore(3, channels, 5, 3, rotations=rotations, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(2)
    for layer in core.features:
        n = layer.norm
        for var, low, high in ((n.mean, -0.5, 0.5), (n.var, 0.5, 2.0), (n.scale, 0.5, 1.5), (n.bias, -0.5, 0.5)):
            var[...] = jnp.asarray(rng.uniform(low, high, var[...].shape), jnp.float32)
    return core


@pytest.mark.parametrize("train", [False, True])
def test_rotating_the_input_rotates_the_maps_and_shifts_the_rotations(train):
    """np.rot90 of the input by k quarter turns gives np.rot90 of every map, with rotation
    group r moved to r + 2k (8 rotations, 45 degrees apart), to float tolerance; a
    non-square frame, so height and width cannot be confused. Any other shift fails."""
    rotations, c = 8, 2
    core = random_core(rotations, (2, 3, c))
    x = np.random.default_rng(0).normal(size=(4, 15, 19, 3)).astype(np.float32)
    graphdef, state = nnx.split(core)
    run = jax.jit(lambda im: nnx.merge(graphdef, state, copy=True)(im, train=train))
    y = np.asarray(run(x))
    assert y.shape == (4, 11, 15, rotations * c)
    scale = np.abs(y).max()

    def groups(a):
        return a.reshape(*a.shape[:3], rotations, c)

    for k in (1, 2, 3):
        turned = np.asarray(run(np.ascontiguousarray(np.rot90(x, k, axes=(1, 2)))))
        for shift in range(rotations):
            want = np.roll(groups(np.rot90(y, k, axes=(1, 2))), shift, axis=3)
            error = np.abs(groups(turned) - want).max()
            if shift == 2 * k:
                assert error < 1e-5 * scale, (k, error)
            else:
                assert error > 0.05 * scale, (k, shift, error)


def test_parameter_layout_and_count_at_competition_scale():
    """The GRU baseline's core: 3 input channels (video + 2 behaviour maps), 8 channels x 8
    rotations, kernels 9 then 7, 4 layers. The reference's trainable count, by its layer
    shapes (HermiteConv2D.coeffs [k(k+1)/2, inputs, 8], BatchNorm1d(8) weight and bias):
    45*3*8 + 3*28*64*8 + 4*16 = 44,152."""
    reference_shapes = [(45, 3, 8)] + [(28, 64, 8)] * 3
    reference_count = sum(math.prod(s) for s in reference_shapes) + 4 * (8 + 8)
    assert reference_count == 44_152
    card = make_card(frame_shape=(36, 64))
    model = nnx.eval_shape(lambda: build_model(default_model_config("gru"), card, nnx.Rngs(0)))
    assert count_parameters(model.core) == reference_count
    for layer, shape in zip(model.core.features, reference_shapes):
        assert layer.hermite_conv.coeffs.shape == shape
        assert layer.norm.scale.shape == layer.norm.bias.shape == layer.norm.mean.shape == (8,)
    # unpadded 9x9, then padded 7x7: 36 x 64 frames give 28 x 56 maps of 64 channels
    def features(x):
        return build_model(default_model_config("gru"), card, nnx.Rngs(0)).core(x, train=False)

    out = jax.eval_shape(features, jax.ShapeDtypeStruct((2, 5, 36, 64, 3), jnp.float32))
    assert out.shape == (2, 5, 28, 56, 64)


def numpy_laplace_penalty(w: np.ndarray) -> float:
    """sum over HWIO filters of (3x3 Laplacian, zero-padded by 1)^2 / sum w^2, with loops."""
    k = w.shape[0]
    padded = np.pad(w, ((1, 1), (1, 1), (0, 0), (0, 0)))
    lap = 4 * padded[1:-1, 1:-1] - padded[:-2, 1:-1] - padded[2:, 1:-1] - padded[1:-1, :-2] - padded[1:-1, 2:]
    assert lap.shape[:2] == (k, k)
    return float((lap.astype(np.float64) ** 2).sum() / (w.astype(np.float64) ** 2).sum())


def test_regularizer_equals_numpy():
    core = RotationEquivariantCore(3, (2, 2, 2), 5, 3, rotations=4, gamma_input=7.0, gamma_hidden=300.0,
                                   rngs=nnx.Rngs(3))
    banks = [np.asarray(layer.hermite_conv.weights_all_rotations(), np.float64) for layer in core.features]
    laplace = numpy_laplace_penalty(banks[0])
    sparsity = np.mean([np.sqrt((w**2).sum(axis=(0, 1))).mean() for w in banks[1:]])
    np.testing.assert_allclose(float(core.laplace()), laplace, rtol=1e-5)
    np.testing.assert_allclose(float(core.group_sparsity()), sparsity, rtol=1e-5)
    np.testing.assert_allclose(float(core.regularizer()), 7.0 * laplace + 300.0 * sparsity, rtol=1e-5)
    grads = nnx.to_pure_dict(nnx.grad(lambda c: c.regularizer())(core))
    for layer in grads["features"].values():  # every layer's coefficients feel the penalty
        assert float(jnp.abs(layer["hermite_conv"]["coeffs"]).sum()) > 0


def test_wide_layers_as_patch_products_equal_the_native_convolutions():
    """In the CPU form layers with wide outputs (8 x 8 and 4 x 8 maps) run as patch products
    (`kernels.uses_patch_products`): outputs and gradients of every coefficient equal those of
    the native convolutions."""
    from sensorium_jax.models import kernels

    assert kernels.uses_patch_products(5 * 5 * 3, 8 * 8) and kernels.uses_patch_products(3 * 3 * 64, 4 * 8)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 12, 14, 3)), jnp.float32)

    def outputs_and_gradients(impl: str):
        core = RotationEquivariantCore(3, (8, 4), 5, 3, rotations=8, kernels_impl=impl, rngs=nnx.Rngs(1))
        graphdef, params, rest = nnx.split(core, nnx.Param, ...)

        def loss(params):
            return jnp.sum(jnp.sin(nnx.merge(graphdef, params, rest, copy=True)(x, train=False)))

        return jax.value_and_grad(loss)(params)

    folded, native = outputs_and_gradients("folded"), outputs_and_gradients("native")
    for got, want in zip(jax.tree.leaves(folded), jax.tree.leaves(native)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
