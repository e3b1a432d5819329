"""Synthetic visual areas with a known feature hierarchy: layer commitment has a ground truth.

V1: Gabor simple and complex cells with small local receptive fields. LM: rectified
combinations of pooled V1 orientation energy over larger fields (second stage). AL: rectified
combinations of LM-like channels, squared and pooled over the whole screen (third stage,
position invariant). Every animal samples its own neurons from the same three stages, so
animals share signal (the inter-animal ceiling) and differ in noise.
"""

from __future__ import annotations

import numpy as np

from sensorium_jax.atlas.data import AtlasData, Recording

AREAS = ("V1", "LM", "AL")


def pink_images(n: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """[n, H, W] images with a 1/f amplitude spectrum and a few hard edges, in 0-255."""
    h, w = shape
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))
    spec = amp * np.exp(2j * np.pi * rng.random((n, h, w)))
    x = np.real(np.fft.ifft2(spec))
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):  # an occluding edge per image, as in natural scenes
        a = rng.uniform(0, np.pi)
        edge = (np.cos(a) * (xx - rng.uniform(0, w)) + np.sin(a) * (yy - rng.uniform(0, h))) > 0
        x[i] += edge * rng.normal(0, 2.0) * x[i].std()
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    return np.clip(128 + 40 * x, 0, 255).astype(np.float32)


def gabor_bank(size: int, n_orient: int, wavelength: float, sigma: float) -> np.ndarray:
    """[n_orient, 2 phases, size, size] zero-mean Gabor kernels."""
    r = np.arange(size) - (size - 1) / 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    out = []
    for k in range(n_orient):
        t = np.pi * k / n_orient
        u = xx * np.cos(t) + yy * np.sin(t)
        env = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
        pair = [env * np.cos(2 * np.pi * u / wavelength), env * np.sin(2 * np.pi * u / wavelength)]
        out.append([p - p.mean() for p in pair])
    return np.asarray(out, np.float32)


def _conv_same(images: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """[n, H, W] x [K, s, s] -> [n, K, H, W] by FFT (circular)."""
    n, h, w = images.shape
    k, s, _ = kernels.shape
    pad = np.zeros((k, h, w), np.float32)
    pad[:, :s, :s] = kernels
    pad = np.roll(pad, (-(s // 2), -(s // 2)), axis=(1, 2))
    return np.real(np.fft.ifft2(np.fft.fft2(images)[:, None] * np.fft.fft2(pad)[None])).astype(np.float32)


def _pool(x: np.ndarray, f: int) -> np.ndarray:
    n, c, h, w = x.shape
    return x[:, :, : h // f * f, : w // f * f].reshape(n, c, h // f, f, w // f, f).mean(axis=(3, 5))


def stages(images: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Noise-free responses of the three stages' channel maps (the areas' feature spaces)."""
    x = (images - 128.0) / 40.0
    bank = gabor_bank(9, 8, 6.0, 2.0)
    lin = _conv_same(x, bank.reshape(16, 9, 9)).reshape(len(x), 8, 2, *x.shape[1:])
    simple = np.maximum(lin[:, :, 0], 0)  # [n, 8, H, W]
    energy = np.sqrt(lin[:, :, 0] ** 2 + lin[:, :, 1] ** 2)
    e = _pool(energy, 4)
    e = (e - e.mean()) / e.std()
    w2 = rng.standard_normal((16, 8)).astype(np.float32) / np.sqrt(8)
    mid = np.maximum(np.einsum("kc,nchw->nkhw", w2, e) - 0.5, 0)  # LM channels
    mid2 = _pool(mid, 2)
    mid2 = (mid2 - mid2.mean()) / mid2.std()
    w3 = rng.standard_normal((16, 16)).astype(np.float32) / 4.0
    high = np.maximum(np.einsum("kc,nchw->nkhw", w3, mid2) - 0.5, 0) ** 2
    return {"simple": simple, "energy": energy, "mid": mid, "high": high.mean(axis=(2, 3))}


def _neurons(feats: dict[str, np.ndarray], area: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise-free rates [n_stimuli, n] of n neurons of an area."""
    out = []
    for _ in range(n):
        if area == "V1":
            maps = feats["simple" if rng.random() < 0.5 else "energy"]
            c = rng.integers(maps.shape[1])
            y, x = rng.integers(4, maps.shape[2] - 4), rng.integers(4, maps.shape[3] - 4)
            r = maps[:, c, y - 1 : y + 2, x - 1 : x + 2].mean(axis=(1, 2))  # a small receptive field
        elif area == "LM":
            m = feats["mid"]
            w = rng.standard_normal(3)
            cs = rng.choice(m.shape[1], 3, replace=False)
            y, x = rng.integers(1, m.shape[2] - 1), rng.integers(1, m.shape[3] - 1)
            r = np.maximum(m[:, cs, y - 1 : y + 2, x - 1 : x + 2].mean(axis=(2, 3)) @ w, 0)
        else:
            h = feats["high"]
            w = np.abs(rng.standard_normal(h.shape[1])) * (rng.random(h.shape[1]) < 0.3)
            r = h @ w
        out.append(r / (r.std() + 1e-6))
    return np.stack(out, axis=1).astype(np.float32)


def make(
    *,
    n_stimuli: int = 60,
    shape: tuple[int, int] = (36, 64),
    mice: int = 2,
    neurons_per_area: int = 24,
    repeats: int = 10,
    noise: float = 0.5,
    seed: int = 0,
) -> AtlasData:
    """Stimuli, and per mouse repeated noisy responses of V1, LM and AL neurons (area labels known)."""
    rng = np.random.default_rng(seed)
    images = pink_images(n_stimuli, shape, rng)
    feats = stages(images, rng)
    recordings = []
    for m in range(mice):
        rates = np.concatenate([_neurons(feats, a, neurons_per_area, rng) for a in AREAS], axis=1)
        sd = noise * np.exp(rng.uniform(-1.0, 1.0, rates.shape[1]))  # neurons differ in reliability
        reps = rates[None] + rng.standard_normal((repeats, *rates.shape)).astype(np.float32) * sd
        areas = np.repeat(np.asarray(AREAS), neurons_per_area)
        recordings.append(Recording(f"synthetic{m}", reps.astype(np.float32), areas,
                                    np.arange(rates.shape[1], dtype=np.int64)))
    return AtlasData(images, recordings, np.arange(n_stimuli), source=f"synthetic hierarchy (seed {seed})")
