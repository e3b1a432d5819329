"""Ridge regression scored by generalised (exact leave-one-out) cross-validation, in dual form.

With an unpenalised intercept the hat matrix is H = 11'/n + Kc (Kc + a I)^-1 for the centred
Gram matrix Kc of the predictors, and the leave-one-out prediction of stimulus i is
y_i - (y - H y)_i / (1 - H_ii). Only n x n matrices appear, so the cost does not depend on the
number of predictors once Kc is formed, and every neuron shares one eigendecomposition.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp


@jax.jit
def zscore_columns(x: jax.Array) -> jax.Array:
    """Columns to mean 0 and (population) std 1; constant columns are only centred."""
    x = x - x.mean(axis=0)
    std = jnp.sqrt(jnp.mean(x * x, axis=0))
    return x / jnp.where(std > 0, std, 1.0)


@jax.jit
def centred_gram(x: jax.Array) -> jax.Array:
    """Kc = Xc Xc' for [n, p] predictors (p may be huge; the result is [n, n])."""
    x = x - x.mean(axis=0)
    return jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)


def loo_operator(gram: jax.Array, alpha: jax.Array) -> jax.Array:
    """[n, n] matrix M with leave-one-out predictions = y - M (y - mean y), for one alpha.

    M = diag(1 - H)^-1 (I - H). The constant vector (the intercept, in the null space of Kc)
    is lifted to the top eigenvalue so it separates cleanly and is left out exactly; then
    neither I - H nor its diagonal is formed by a cancelling subtraction.
    """
    n = gram.shape[0]
    lift = 2.0 * jnp.trace(gram) + 1.0
    lam, vec = jnp.linalg.eigh(gram + lift / n)
    lam = jnp.maximum(lam, 0.0)
    keep = jnp.where(jnp.arange(n) == n - 1, 0.0, alpha / (lam + alpha))  # eigenvalues of I - H
    i_minus_h = (vec * keep) @ vec.T
    return i_minus_h / ((vec * vec) @ keep)[:, None]


def loo_predictions(operators: jax.Array, responses: jax.Array) -> jax.Array:
    """Leave-one-out predictions [n, N] from operators [A, n, n] (one per alpha): per neuron,
    those of the alpha with the least leave-one-out squared error (as RidgeCV per target)."""
    y = responses
    yc = y - y.mean(axis=0)
    preds = y[None] - jnp.einsum("aij,jn->ain", operators, yc)  # [A, n, N]
    if operators.shape[0] == 1:
        return preds[0]
    mse = jnp.mean((preds - y) ** 2, axis=1)  # [A, N]
    best = jnp.argmin(mse, axis=0)
    return jnp.take_along_axis(preds, best[None, None, :], axis=0)[0]


def pearson_columns(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson r per column of two [n, N] arrays (0 where a column is constant)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    num = jnp.sum(a * b, axis=0)
    den = jnp.sqrt(jnp.sum(a * a, axis=0) * jnp.sum(b * b, axis=0))
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


@jax.jit
def loo_operators(grams: jax.Array, alphas: jax.Array) -> jax.Array:
    """[L, A, n, n] operators for grams [L, n, n] and alphas [A]."""
    return jax.vmap(lambda g: jax.vmap(lambda a: loo_operator(g, a))(alphas))(grams)


@jax.jit
def _scores(operators: jax.Array, responses: jax.Array) -> jax.Array:
    return jax.lax.map(lambda ops: pearson_columns(loo_predictions(ops, responses), responses), operators)


def gcv_scores(gram: jax.Array, responses: jax.Array, alphas: jax.Array, *, x64: bool = True) -> jax.Array:
    """Per-neuron r of the leave-one-out predictions, batched over a leading layer axis of gram.

    gram: [L, n, n] or [n, n]; responses: [n, N]; returns [L, N] or [N] (float32).
    x64: build the n x n operators in float64. With alpha small against the Gram eigenvalues
    (4,096 z-scored columns, alpha 1) they are ill-conditioned and float32 loses about 1e-4 in
    r; applying them to the responses, the bulk of the work, stays float32.
    """
    gram = jnp.asarray(gram)
    single = gram.ndim == 2
    grams = gram[None] if single else gram
    if x64:
        with jax.enable_x64(True):
            ops = loo_operators(jnp.asarray(grams, jnp.float64), jnp.asarray(alphas, jnp.float64))
            ops = ops.astype(jnp.float32)
    else:
        ops = loo_operators(grams.astype(jnp.float32), jnp.asarray(alphas, jnp.float32))
    out = _scores(ops, jnp.asarray(responses, jnp.float32))
    return out[0] if single else out
