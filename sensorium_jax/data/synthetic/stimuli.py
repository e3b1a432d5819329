"""Stimuli of the synthetic digital mouse: natural-like clips and out-of-distribution types.

All generators are pure numpy functions of a `np.random.Generator`, so a stimulus is fully
determined by its seed (repeats of a test stimulus are regenerated, not stored). Frames are
time-major float32 [T, H, W] in 0-255 (gray = 128), 30 frames per second, like the
SENSORIUM 2023 videos after downsampling to 36 x 64.

Natural clips are "dead leaves" scenes (occluding ellipses with a power-law size
distribution, which gives a ~1/f amplitude spectrum and real edges) plus a 1/f texture,
panned smoothly across the screen, with a scene cut every 1-2 s. The out-of-distribution
types follow the SENSORIUM 2023 bonus track: drifting gratings, drifting Gabor patches,
flashing Gaussian dots, random dot kinematograms, directional pink noise, and flashed
static natural images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FRAME_SHAPE = (36, 64)
FPS = 30
GRAY = 128.0
CANVAS_SHAPE = (96, 128)  # periodic canvas that natural scenes are panned across


# ----------------------------------------------------------------------------- textures


def pink_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    alpha: float = 1.0,
    orientation: float | None = None,
    concentration: float = 0.0,
) -> np.ndarray:
    """Periodic zero-mean unit-std noise with amplitude spectrum 1/f^alpha.

    With `orientation` (radians, direction of the wave vectors favoured) and `concentration`
    > 0 the spectrum is weighted by exp(concentration * cos(2 (angle - orientation))), which
    gives the oriented texture of the "directional pink noise" stimulus.
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    radius = np.hypot(fy, fx)
    amplitude = np.zeros(shape)
    amplitude[radius > 0] = radius[radius > 0] ** -alpha
    if orientation is not None and concentration > 0:
        angle = np.arctan2(fy, fx)
        amplitude *= np.exp(concentration * (np.cos(2 * (angle - orientation)) - 1))
    spectrum = np.fft.rfft2(rng.standard_normal(shape)) * amplitude[:, : shape[1] // 2 + 1]
    field = np.fft.irfft2(spectrum, shape)
    return _standardize(field)


def dead_leaves(rng: np.random.Generator, shape: tuple[int, int], n_leaves: int = 70) -> np.ndarray:
    """Periodic zero-mean unit-std image of occluding ellipses (sizes ~ r^-3, scale invariant).

    Vectorized with a z-buffer: each pixel shows the last-drawn leaf covering it (small
    leaves are drawn last, on top), shaded with a gentle gradient inside the leaf.
    """
    r_min, r_max = 3.0, 48.0
    u = rng.random(n_leaves)
    radii = np.sort((r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5)[::-1]
    centers = rng.random((n_leaves, 2)) * np.asarray(shape)
    aspects = rng.uniform(0.35, 1.0, n_leaves)
    angles = rng.uniform(0, np.pi, n_leaves)
    levels = rng.standard_normal(n_leaves)
    slopes = rng.standard_normal((n_leaves, 2)) * 0.15
    background = rng.standard_normal()
    height, width = shape

    def inside(dy: np.ndarray, dx: np.ndarray, leaves: np.ndarray) -> np.ndarray:
        cos, sin = np.cos(angles[leaves]), np.sin(angles[leaves])
        along = dx * cos + dy * sin
        across = dy * cos - dx * sin
        radius = radii[leaves]
        return (along / radius) ** 2 + (across / (radius * aspects[leaves])) ** 2 <= 1.0

    top = np.full(height * width, -1, np.int64)  # index of the visible leaf per pixel
    reach = 9
    small = np.flatnonzero(radii <= reach - 1)
    large = np.flatnonzero(radii > reach - 1)
    # large leaves: evaluated on the whole canvas, periodic distances
    y = np.arange(height, dtype=np.float64)[None, :, None]
    x = np.arange(width, dtype=np.float64)[None, None, :]
    if large.size:
        dy = (y - centers[large, 0, None, None] + height / 2) % height - height / 2
        dx = (x - centers[large, 1, None, None] + width / 2) % width - width / 2
        mask = inside(dy, dx, large[:, None, None])
        drawn = np.where(mask, large[:, None, None], -1).max(0).ravel()
        top = np.maximum(top, drawn)
    # small leaves: a (2 reach + 1)^2 stamp around each centre
    if small.size:
        offsets = np.arange(-reach, reach + 1)
        rows = np.floor(centers[small, 0])[:, None, None] + offsets[None, :, None]
        cols = np.floor(centers[small, 1])[:, None, None] + offsets[None, None, :]
        dy = rows - centers[small, 0, None, None]
        dx = cols - centers[small, 1, None, None]
        mask = inside(dy, dx, small[:, None, None])
        pixels = (rows.astype(np.int64) % height) * width + (cols.astype(np.int64) % width)
        ids = np.broadcast_to(small[:, None, None], mask.shape)
        np.maximum.at(top, pixels[mask], ids[mask])
    top = top.reshape(shape)
    visible = np.maximum(top, 0)
    dy = (np.arange(height)[:, None] - centers[visible, 0] + height / 2) % height - height / 2
    dx = (np.arange(width)[None, :] - centers[visible, 1] + width / 2) % width - width / 2
    shade = levels[visible] + (slopes[visible, 0] * dy + slopes[visible, 1] * dx) / radii[visible]
    return _standardize(np.where(top >= 0, shade, background))


def natural_canvas(rng: np.random.Generator, shape: tuple[int, int] = CANVAS_SHAPE) -> np.ndarray:
    """A natural-like periodic scene: dead leaves plus a weaker 1/f texture (unit std)."""
    leaves = dead_leaves(rng, shape)
    texture = pink_noise(rng, shape, alpha=rng.uniform(0.9, 1.3))
    return _standardize(leaves + rng.uniform(0.2, 0.45) * texture)


def _standardize(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    std = x.std()
    return (x / std if std > 0 else x).astype(np.float32)


# ----------------------------------------------------------------------------- motion


def smooth_series(rng: np.random.Generator, n: int, sigma: float, channels: int = 1) -> np.ndarray:
    """[channels, n] stationary Gaussian processes of unit variance, Gaussian-smoothed (sigma frames)."""
    pad = int(4 * sigma) + 1
    white = rng.standard_normal((channels, n + 2 * pad))
    taps = np.arange(-pad, pad + 1)
    kernel = np.exp(-0.5 * (taps / max(sigma, 1e-3)) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))
    size = white.shape[1] + kernel.size - 1
    smooth = np.fft.irfft(np.fft.rfft(white, size) * np.fft.rfft(kernel, size), size)
    return smooth[:, 2 * pad : 2 * pad + n]


def crop(canvas: np.ndarray, path: np.ndarray, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """[T, H, W] bilinear crops of a periodic canvas at top-left positions path [T, 2] (y, x)."""
    iy = np.floor(path[:, 0]).astype(np.int64)
    ix = np.floor(path[:, 1]).astype(np.int64)
    fy = (path[:, 0] - iy).astype(np.float32)[:, None, None]
    fx = (path[:, 1] - ix).astype(np.float32)[:, None, None]
    rows = (iy[:, None] + np.arange(shape[0] + 1)) % canvas.shape[0]
    cols = (ix[:, None] + np.arange(shape[1] + 1)) % canvas.shape[1]
    patch = canvas[rows[:, :, None], cols[:, None, :]]  # [T, H+1, W+1]
    top = patch[:, :-1, :-1] * (1 - fx) + patch[:, :-1, 1:] * fx
    bottom = patch[:, 1:, :-1] * (1 - fx) + patch[:, 1:, 1:] * fx
    return top * (1 - fy) + bottom * fy


def pan_path(rng: np.random.Generator, n: int, canvas_shape: tuple[int, int] = CANVAS_SHAPE) -> np.ndarray:
    """[n, 2] smooth camera path: a still, slowly drifting or panning shot with jitter."""
    start = rng.random(2) * np.asarray(canvas_shape)
    mode = rng.random()
    if mode < 0.15:
        speed = rng.uniform(0.0, 0.1)
    elif mode < 0.45:
        speed = rng.uniform(0.1, 0.4)
    else:
        speed = rng.uniform(0.4, 1.2)
    direction = rng.uniform(0, 2 * np.pi)
    velocity = speed * np.array([np.sin(direction), np.cos(direction)])
    wobble = smooth_series(rng, n, sigma=6.0, channels=2).T * rng.uniform(0.05, 0.3)
    steps = velocity[None, :] + wobble
    return start + np.cumsum(steps, axis=0) - steps[0]


# ----------------------------------------------------------------------------- natural clips


def natural_clip(rng: np.random.Generator, n_frames: int, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """[T, H, W] natural-like movie: panned dead-leaves scenes, a cut every 1-2 s."""
    frames = np.empty((n_frames, *shape), np.float32)
    t = 0
    while t < n_frames:
        n = min(int(rng.integers(30, 61)), n_frames - t)
        canvas = natural_canvas(rng)
        luminance = rng.uniform(85, 170)
        contrast = rng.uniform(22, 50)  # std in gray levels
        frames[t : t + n] = luminance + contrast * crop(canvas, pan_path(rng, n), shape)
        t += n
    return np.clip(frames, 0, 255)


def natural_image(rng: np.random.Generator, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """[H, W] one static natural-like image (the 2022 static stimulus)."""
    canvas = natural_canvas(rng, (shape[0] + 12, shape[1] + 16))
    image = rng.uniform(95, 160) + rng.uniform(25, 50) * canvas[6 : 6 + shape[0], 8 : 8 + shape[1]]
    return np.clip(image, 0, 255).astype(np.float32)


# ----------------------------------------------------------------------------- OOD types


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(shape[0], dtype=np.float64)[:, None]
    x = np.arange(shape[1], dtype=np.float64)[None, :]
    return y, x


def _segments(rng: np.random.Generator, n_frames: int, low: int, high: int):
    t = 0
    while t < n_frames:
        n = min(int(rng.integers(low, high + 1)), n_frames - t)
        yield t, n
        t += n


def drifting_gratings(rng: np.random.Generator, n_frames: int, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """Full-field sinusoidal gratings, a new direction/frequency/speed every 1-1.5 s."""
    y, x = _grid(shape)
    frames = np.empty((n_frames, *shape), np.float32)
    for t0, n in _segments(rng, n_frames, 30, 45):
        theta = rng.uniform(0, 2 * np.pi)
        wavelength = rng.uniform(6, 24)
        cycles_per_frame = rng.uniform(1, 4) / FPS
        contrast = rng.uniform(0.4, 1.0)
        phase0 = rng.uniform(0, 2 * np.pi)
        k = 2 * np.pi / wavelength
        spatial = k * (x * np.cos(theta) + y * np.sin(theta))
        t = np.arange(n)[:, None, None]
        frames[t0 : t0 + n] = GRAY + 127 * contrast * np.sin(spatial[None] - 2 * np.pi * cycles_per_frame * t + phase0)
    return frames


def drifting_gabors(rng: np.random.Generator, n_frames: int, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """1-3 stationary Gaussian apertures with drifting carriers on gray, new every 1-1.5 s."""
    y, x = _grid(shape)
    frames = np.empty((n_frames, *shape), np.float32)
    for t0, n in _segments(rng, n_frames, 30, 45):
        t = np.arange(n)[:, None, None]
        clip = np.zeros((n, *shape))
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(4, shape[0] - 4), rng.uniform(6, shape[1] - 6)
            sigma = rng.uniform(3.5, 8)
            theta = rng.uniform(0, 2 * np.pi)
            k = 2 * np.pi / rng.uniform(6, 16)
            omega = 2 * np.pi * rng.uniform(1, 4) / FPS
            envelope = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
            carrier = np.sin(k * ((x - cx) * np.cos(theta) + (y - cy) * np.sin(theta))[None] - omega * t)
            clip += rng.uniform(60, 127) * envelope[None] * carrier
        frames[t0 : t0 + n] = GRAY + clip
    return np.clip(frames, 0, 255)


def _render_dots(
    positions: np.ndarray, amplitudes: np.ndarray, sigma: float | np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """[T, H, W] sums of periodic Gaussian dots; positions [T, D, 2] (y, x), amplitudes [T, D]."""
    y = np.arange(shape[0], dtype=np.float64)
    x = np.arange(shape[1], dtype=np.float64)
    dy = y[None, :, None] - positions[:, None, :, 0]  # [T, H, D]
    dx = x[None, :, None] - positions[:, None, :, 1]  # [T, W, D]
    dy = (dy + shape[0] / 2) % shape[0] - shape[0] / 2
    dx = (dx + shape[1] / 2) % shape[1] - shape[1] / 2
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), amplitudes.shape)[:, None, :]
    gy = np.exp(-0.5 * (dy / sigma) ** 2) * amplitudes[:, None, :]
    gx = np.exp(-0.5 * (dx / sigma) ** 2)
    return np.matmul(gy, gx.transpose(0, 2, 1))


def flashing_dots(rng: np.random.Generator, n_frames: int, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """Gaussian dots (bright or dark) flashed for 200-400 ms with 100-300 ms gray gaps."""
    max_dots = 4
    positions = np.zeros((n_frames, max_dots, 2))
    amplitudes = np.zeros((n_frames, max_dots))
    sigmas = np.ones((n_frames, max_dots))
    t = 0
    while t < n_frames:
        on = int(rng.integers(6, 13))
        count = int(rng.integers(1, max_dots + 1))
        end = min(t + on, n_frames)
        positions[t:end, :count] = rng.random((count, 2)) * np.asarray(shape)
        amplitudes[t:end, :count] = rng.choice([-1.0, 1.0], count) * rng.uniform(70, 120, count)
        sigmas[t:end, :count] = rng.uniform(1.5, 4.0, count)
        t = end + int(rng.integers(3, 10))
    return np.clip(GRAY + _render_dots(positions, amplitudes, sigmas, shape), 0, 255).astype(np.float32)


def random_dots(rng: np.random.Generator, n_frames: int, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """Random dot kinematograms: small dots moving coherently (a share at random), new every 1-2 s."""
    n_dots = 60
    positions = np.empty((n_frames, n_dots, 2))
    amplitudes = np.empty((n_frames, n_dots))
    for t0, n in _segments(rng, n_frames, 30, 60):
        direction = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.7, 2.0)
        coherent = rng.random(n_dots) < rng.uniform(0.6, 1.0)
        angles = np.where(coherent, direction, rng.uniform(0, 2 * np.pi, n_dots))
        velocity = speed * np.stack([np.sin(angles), np.cos(angles)], -1)
        start = rng.random((n_dots, 2)) * np.asarray(shape)
        positions[t0 : t0 + n] = start[None] + np.arange(n)[:, None, None] * velocity[None]
        amplitudes[t0 : t0 + n] = (rng.choice([-1.0, 1.0], n_dots) * 110.0)[None]
    return np.clip(GRAY + _render_dots(positions, amplitudes, 0.9, shape), 0, 255).astype(np.float32)


def directional_pink_noise(
    rng: np.random.Generator, n_frames: int, shape: tuple[int, int] = FRAME_SHAPE
) -> np.ndarray:
    """Oriented 1/f noise translating along its dominant wave vector, new every 1.5-2.5 s."""
    frames = np.empty((n_frames, *shape), np.float32)
    for t0, n in _segments(rng, n_frames, 45, 75):
        theta = rng.uniform(0, 2 * np.pi)
        canvas = pink_noise(rng, CANVAS_SHAPE, alpha=1.0, orientation=theta, concentration=2.5)
        speed = rng.uniform(0.5, 1.5)
        step = speed * np.array([np.sin(theta), np.cos(theta)])
        path = rng.random(2) * np.asarray(CANVAS_SHAPE) + np.arange(n)[:, None] * step[None]
        frames[t0 : t0 + n] = GRAY + rng.uniform(30, 45) * crop(canvas, path, shape)
    return np.clip(frames, 0, 255)


def natural_images(rng: np.random.Generator, n_frames: int, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """Static natural-like images flashed for 500 ms each (the ImageNet block of the bonus track)."""
    frames = np.empty((n_frames, *shape), np.float32)
    for t0, n in _segments(rng, n_frames, 15, 15):
        frames[t0 : t0 + n] = natural_image(rng, shape)[None]
    return frames


OOD_GENERATORS: dict[str, Callable[[np.random.Generator, int, tuple[int, int]], np.ndarray]] = {
    "drifting_gratings": drifting_gratings,
    "drifting_gabors": drifting_gabors,
    "flashing_dots": flashing_dots,
    "random_dots": random_dots,
    "directional_pink_noise": directional_pink_noise,
    "natural_images": natural_images,
}
OOD_TYPES = tuple(OOD_GENERATORS)
STIMULUS_TYPES = ("natural",) + OOD_TYPES


def make_clip(kind: str, rng: np.random.Generator, n_frames: int, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """[T, H, W] float32 clip of one stimulus type ("natural" or an OOD type)."""
    if kind == "natural":
        return natural_clip(rng, n_frames, shape)
    return OOD_GENERATORS[kind](rng, n_frames, shape).astype(np.float32)
