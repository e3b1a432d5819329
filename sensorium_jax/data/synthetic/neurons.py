"""Neurons and behaviour of the synthetic digital mouse: the ground-truth model.

Each neuron reads one channel of a bank of complex Gabor filters (orientations x scales) at
its receptive-field (RF) position on the screen, which moves with the eye. Simple cells take
the real part at their own phase, complex cells the amplitude of the quadrature pair (energy
model). A per-neuron temporal kernel with a latency of a few frames, a rectifying power
nonlinearity, a gain set by running speed and pupil size, and calcium-like exponential
smoothing give the noise-free rate. Noise enters as random "spike" events (compound
Poisson: variance proportional to the rate, exact zeros between events) before the calcium
smoothing, so the noise-free rate is exactly the expected response.

The model class matches what the factorized baseline can learn: shared convolutional
features, a per-neuron position read out bilinearly, a shift of that position driven by the
pupil center, a temporal filter, an output nonlinearity and a behavioural gain.

Speed: the filters are applied in the Fourier domain once per frame for the whole
population. The eye shift is a phase ramp on the frame's spectrum, so RF positions stay
fixed and their bilinear weights are precomputed. Each channel is demodulated to baseband
and decimated (coarse scales are smooth), then read out at the neurons' positions; channels
with few neurons use the same linear map as one small matrix product instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sensorium_jax.data.synthetic.stimuli import FRAME_SHAPE, GRAY, smooth_series

SIMPLE, COMPLEX = 0, 1
CELL_TYPES = ("simple", "complex")
KERNEL_LENGTH = 12  # frames of the temporal kernel (latency included)
SPECTRAL_FLOOR = 1e-4  # Gabor spectrum values below this (peak 1) are dropped
RELIABILITY = (4.5, 5.5)  # beta (a, b) of the neurons' rate-response correlation


@dataclasses.dataclass(frozen=True)
class FilterBank:
    """Complex Gabor channels: n_orientations x len(sigmas); wavelength = ratio * sigma."""

    sigmas: tuple[float, ...] = (2.0, 4.0, 6.0)
    decimation: tuple[int, ...] = (1, 2, 3)  # baseband grid spacing per scale (pixels)
    wavelength_per_sigma: float = 3.5
    n_orientations: int = 6  # 30 deg apart: the Gabors' orientation bandwidth is ~32 deg
    grid: tuple[int, int] = (60, 96)  # zero-padded FFT grid holding the 36 x 64 frame

    @property
    def n_channels(self) -> int:
        return len(self.sigmas) * self.n_orientations

    def channel(self, scale: int, orientation: int) -> int:
        return scale * self.n_orientations + orientation

    def orientation(self, index: np.ndarray | int) -> np.ndarray:
        """Direction of the carrier's wave vector (radians; x right, y down)."""
        return np.pi * np.asarray(index) / self.n_orientations

    def frequency(self, scale: int, orientation: int) -> np.ndarray:
        """(fy, fx) carrier frequency in cycles per pixel."""
        theta = float(self.orientation(orientation))
        wavelength = self.sigmas[scale] * self.wavelength_per_sigma
        return np.array([np.sin(theta), np.cos(theta)]) / wavelength

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- population


def sample_population(
    rng: np.random.Generator,
    n_neurons: int,
    bank: FilterBank,
    frame_shape: tuple[int, int] = FRAME_SHAPE,
    reliability: tuple[float, float] = RELIABILITY,
) -> dict[str, np.ndarray]:
    """Per-neuron parameters (arrays of length N) and the retinotopic map of one mouse.

    `reliability`: the beta distribution (a, b) of each neuron's target correlation between
    its noise-free rate and its responses (clipped to [0.15, 0.9]).
    """
    H, W = frame_shape
    n = n_neurons
    # cortical positions (microns): a ~800 um field of view, a few imaging planes in L2-5
    planes = np.sort(rng.uniform(180, 420, int(rng.integers(4, 9))))
    origin = rng.uniform(-300, 300, 2)
    cortex = rng.uniform(-400, 400, (n, 2))
    depth = planes[rng.integers(0, planes.size, n)] + rng.normal(0, 3, n)
    coordinates = np.column_stack([cortex + origin, depth]).astype(np.float32)
    # retinotopy: a smooth (rotated, gently warped) map of cortex onto the screen + scatter
    angle = rng.normal(0, 0.25)
    u = cortex / 400.0
    u = u @ np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    warp = rng.uniform(-0.12, 0.12, 2)
    u = u + warp * u[:, ::-1] ** 2
    x = W / 2 - 0.5 + u[:, 0] * W * 0.4 + rng.normal(0, 1.5, n)
    y = H / 2 - 0.5 + u[:, 1] * H * 0.38 + rng.normal(0, 1.5, n)
    position = np.column_stack([np.clip(x, 1.0, W - 2.0), np.clip(y, 1.0, H - 2.0)])

    cell_type = (rng.random(n) < 0.55).astype(np.int8)  # COMPLEX with probability 0.55
    scale_index = rng.choice(len(bank.sigmas), n, p=_scale_probabilities(len(bank.sigmas)))
    orientation_index = rng.integers(0, bank.n_orientations, n)
    sigma = np.asarray(bank.sigmas)[scale_index]
    latency = rng.choice([2, 3, 4], n, p=[0.3, 0.45, 0.25])
    tau_fast = rng.uniform(0.6, 1.0, n)
    tau_slow = tau_fast * rng.uniform(1.5, 2.2, n)
    rebound = rng.uniform(0.2, 0.6, n)
    exponent = rng.uniform(1.0, 1.6, n)
    threshold = np.where(cell_type == COMPLEX, rng.uniform(0.0, 0.8, n), rng.uniform(0.0, 0.6, n))
    amplitude = rng.lognormal(0.0, 0.4, n)
    return {
        "coordinates": coordinates,
        "position": position.astype(np.float32),
        "cell_type": cell_type,
        "scale_index": scale_index.astype(np.int16),
        "orientation_index": orientation_index.astype(np.int16),
        "channel": (scale_index * bank.n_orientations + orientation_index).astype(np.int16),
        "sigma": sigma.astype(np.float32),
        "wavelength": (sigma * bank.wavelength_per_sigma).astype(np.float32),
        "orientation": bank.orientation(orientation_index).astype(np.float32),
        "phase": rng.uniform(0, 2 * np.pi, n).astype(np.float32),
        "latency": latency.astype(np.int16),
        "temporal_kernel": temporal_kernels(latency, tau_fast, tau_slow, rebound),
        "calcium_tau": rng.uniform(2.5, 5.0, n).astype(np.float32),
        "threshold": threshold.astype(np.float32),
        "exponent": exponent.astype(np.float32),
        "amplitude": amplitude.astype(np.float32),
        "baseline": (amplitude * rng.uniform(0.02, 0.1, n)).astype(np.float32),
        "beta_running": rng.normal(0.35, 0.2, n).astype(np.float32),
        "beta_pupil": rng.normal(0.2, 0.2, n).astype(np.float32),
        "target_reliability": np.clip(rng.beta(*reliability, n), 0.15, 0.9).astype(np.float32),
    }


def _scale_probabilities(n_scales: int) -> np.ndarray:
    weights = np.array([0.4, 0.4, 0.2][:n_scales] + [0.2] * max(0, n_scales - 3))
    return weights / weights.sum()


def temporal_kernels(
    latency: np.ndarray, tau_fast: np.ndarray, tau_slow: np.ndarray, rebound: np.ndarray
) -> np.ndarray:
    """[N, KERNEL_LENGTH] biphasic kernels (fast lobe minus slower rebound) after a delay; unit L2."""
    t = np.arange(KERNEL_LENGTH)[None, :] - np.asarray(latency)[:, None]
    t = np.maximum(t, 0).astype(np.float64)
    fast = (t / tau_fast[:, None]) ** 2 * np.exp(-t / tau_fast[:, None])
    slow = (t / tau_slow[:, None]) ** 2 * np.exp(-t / tau_slow[:, None])
    kernel = fast / fast.max(1, keepdims=True) - rebound[:, None] * slow / slow.max(1, keepdims=True)
    return (kernel / np.linalg.norm(kernel, axis=1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------- spatial stage


class SpatialReadout:
    """Complex Gabor responses [T, N] at each neuron's RF position, for frames with eye shifts.

    The response of channel c at screen position p of frame s is
    sum_x s(x) env(x - p) (exp(-2 pi i f_c.(x - p)) - kappa_c), with a Gaussian envelope of
    std sigma_c, zero DC (kappa_c) and s = (frame - frame mean) / 128 (zero off the screen).
    A neuron reads its channel at p_n + eye shift, bilinearly from a baseband grid of
    spacing `decimation`. Channels with fewer than `direct_below` neurons apply the same
    linear map as one real matrix product on the half spectrum instead of an inverse FFT.
    """

    def __init__(self, bank: FilterBank, position: np.ndarray, channel: np.ndarray, direct_below: int = 24):
        self.bank = bank
        self.n_neurons = int(position.shape[0])
        Hp, Wp = bank.grid
        self.ky = np.fft.fftfreq(Hp)
        self.kx_half = np.fft.rfftfreq(Wp)
        self.channels: list[dict[str, Any]] = []
        direct: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for c in np.unique(channel):
            neurons = np.flatnonzero(channel == c)
            scale, orientation = divmod(int(c), bank.n_orientations)
            plan = self._plan(scale, orientation, neurons, position[neurons], direct_below)
            if "matrix" in plan:
                columns = np.zeros((Hp * Wp, len(neurons)), np.complex128)
                columns[plan["window"]] = plan["matrix"]
                direct.setdefault(scale, []).append((neurons, columns))
            else:
                self.channels.append(plan)
        # one matrix per scale, restricted to the spectral bins its filters reach
        self.direct: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for scale in sorted(direct):
            neurons = np.concatenate([n for n, _ in direct[scale]])
            matrix = _fold_half_spectrum(np.concatenate([m for _, m in direct[scale]], 1), bank.grid)
            rows = np.flatnonzero(np.any(matrix != 0, axis=1))
            self.direct.append((neurons, rows, np.ascontiguousarray(matrix[rows])))

    def _plan(self, scale: int, orientation: int, neurons: np.ndarray, position: np.ndarray, direct_below: int):
        bank = self.bank
        Hp, Wp = bank.grid
        d = bank.decimation[scale]
        hy, hx = Hp // d, Wp // d
        sigma = bank.sigmas[scale]
        f0 = bank.frequency(scale, orientation)
        k0 = np.rint(f0 * np.array([Hp, Wp])).astype(int)  # carrier bin used for demodulation
        off_y = np.rint(np.fft.fftfreq(hy) * hy).astype(int)
        off_x = np.rint(np.fft.fftfreq(hx) * hx).astype(int)
        rows, cols = (k0[0] + off_y) % Hp, (k0[1] + off_x) % Wp
        fy = ((k0[0] + off_y) / Hp)[:, None]  # the alias of each bin nearest the carrier
        fx = ((k0[1] + off_x) / Wp)[None, :]
        gabor = np.exp(-2 * np.pi**2 * sigma**2 * ((fy - f0[0]) ** 2 + (fx - f0[1]) ** 2))
        fy_dc = (fy + 0.5) % 1.0 - 0.5
        fx_dc = (fx + 0.5) % 1.0 - 0.5
        kappa = np.exp(-2 * np.pi**2 * sigma**2 * (f0 @ f0))
        gabor = gabor - kappa * np.exp(-2 * np.pi**2 * sigma**2 * (fy_dc**2 + fx_dc**2))
        gabor[(np.abs(fy_dc) == 0.5) | (np.abs(fx_dc) == 0.5)] = 0  # Nyquist bins: keep it real
        gabor[np.abs(gabor) < SPECTRAL_FLOOR] = 0  # finite support: fewer bins to visit
        # bilinear corners of each neuron on the baseband grid (periodic)
        gx, gy = position[:, 0] / d, position[:, 1] / d
        jx, jy = np.floor(gx).astype(int), np.floor(gy).astype(int)
        wx, wy = gx - jx, gy - jy
        corner_y = np.stack([jy, jy, jy + 1, jy + 1], 1) % hy
        corner_x = np.stack([jx, jx + 1, jx, jx + 1], 1) % hx
        weights = np.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], 1)
        carrier = np.exp(2j * np.pi * (k0[0] * position[:, 1] / Hp + k0[1] * position[:, 0] / Wp))
        plan: dict[str, Any] = {"neurons": neurons, "window": (rows[:, None] * Wp + cols[None, :]).ravel()}
        if len(neurons) < direct_below:
            # the same linear map as a matrix: response = sum_k X(k) H(k, n)
            phase = np.exp(
                2j * np.pi * (off_y[:, None, None] * (corner_y * d)[None] / Hp)[:, None]
                + 2j * np.pi * (off_x[:, None, None] * (corner_x * d)[None] / Wp)[None]
            )  # [hy, hx, n, 4]
            readout = np.einsum("yxnc,nc->yxn", phase, weights) * carrier
            plan["matrix"] = (gabor[:, :, None] * readout).reshape(hy * hx, -1)
        elif d == 1:
            # full-resolution map, no demodulation: the spectrum stays in FFT order
            full = np.zeros((Hp, Wp), np.complex128)
            full[rows[:, None], cols[None, :]] = gabor
            demodulate = np.exp(-2j * np.pi * (k0[0] * corner_y / Hp + k0[1] * corner_x / Wp))
            plan["gabor"] = full.astype(np.complex64)
            plan["window"] = None
            plan["corners"] = (corner_y * Wp + corner_x).astype(np.int64)
            plan["weights"] = (weights * demodulate * carrier[:, None] * (Hp * Wp)).astype(np.complex64)
        else:
            plan["gabor"] = (gabor * (hy * hx)).astype(np.complex64)
            plan["shape"] = (hy, hx)
            plan["corners"] = (corner_y * hx + corner_x).astype(np.int64)
            plan["weights"] = (weights * carrier[:, None]).astype(np.complex64)
        return plan

    def half_spectrum(self, frames: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """[T, Hp, Wp // 2 + 1] spectrum / (Hp Wp) of the zero-padded frames, eye shift applied.

        The map read at p + shift is the map of a spectrum times exp(2 pi i k.shift).
        ("forward" norm: numpy's unscaled complex64 transform is ~3x slower.)
        """
        Hp, Wp = self.bank.grid
        s = (frames - frames.mean(axis=(1, 2), keepdims=True, dtype=np.float32)) / np.float32(GRAY)
        half = np.fft.rfft(s, n=Wp, axis=2, norm="forward")
        half *= np.exp(2j * np.pi * self.kx_half[None, :] * shift[:, 0:1]).astype(np.complex64)[:, None, :]
        half = np.fft.fft(half, n=Hp, axis=1, norm="forward")
        half *= np.exp(2j * np.pi * self.ky[None, :] * shift[:, 1:2]).astype(np.complex64)[:, :, None]
        return half

    def __call__(self, frames: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """frames [T, H, W] in 0-255, shift [T, 2] (dx, dy) pixels -> [T, N] complex64."""
        T = frames.shape[0]
        Hp, Wp = self.bank.grid
        half = self.half_spectrum(frames, shift)
        out = np.empty((T, self.n_neurons), np.complex64)
        if self.direct:
            flat = half.reshape(T, -1)
            parts = np.concatenate([flat.real, flat.imag], 1)
            for neurons, rows, matrix in self.direct:
                values = np.take(parts, rows, axis=1) @ matrix
                out[:, neurons] = values[:, : neurons.size] + 1j * values[:, neurons.size :]
        if not self.channels:
            return out
        spectrum = np.empty((T, Hp, Wp), np.complex64)  # Hermitian completion
        width = half.shape[2]
        spectrum[:, :, :width] = half
        spectrum[:, :, width:] = np.conj(half[:, (-np.arange(Hp)) % Hp, Wp - width : 0 : -1])
        flat = spectrum.reshape(T, Hp * Wp)
        for plan in self.channels:
            if plan["window"] is None:
                baseband = np.fft.ifft2(spectrum * plan["gabor"])
            else:
                window = np.take(flat, plan["window"], axis=1).reshape(T, *plan["shape"])
                baseband = np.fft.ifft2(window * plan["gabor"])
            values = np.take(baseband.reshape(T, -1), plan["corners"], axis=1)  # [T, n, 4]
            out[:, plan["neurons"]] = np.einsum("tnc,nc->tn", values, plan["weights"])
        return out


def _fold_half_spectrum(matrix: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Real [2 Hp Wh, 2 N] matrix M with [Re X, Im X] @ M = [Re r, Im r], r = sum_k X(k) H(k).

    For a real frame X(-k) = conj(X(k)), so the sum over the full spectrum folds onto the
    half spectrum (Wh = Wp // 2 + 1 columns): r = Re X (H + H') + Im X i (H - H'), where
    H'(k) = H(-k) for the columns whose mirror lies outside the half.
    """
    Hp, Wp = grid
    n = matrix.shape[1]
    full = matrix.reshape(Hp, Wp, n)
    width = Wp // 2 + 1
    direct = full[:, :width]
    mirror = np.zeros_like(direct)
    columns = np.arange(1, Wp - width + 1)  # mirrored columns Wp - c lie outside the half
    mirror[:, columns] = full[(-np.arange(Hp)) % Hp][:, Wp - columns]
    a = (direct + mirror).reshape(-1, n)
    b = (1j * (direct - mirror)).reshape(-1, n)
    return np.block([[a.real, a.imag], [b.real, b.imag]]).astype(np.float32)


def receptive_field_image(
    population: dict[str, np.ndarray], n: int, frame_shape: tuple[int, int] = FRAME_SHAPE
) -> np.ndarray:
    """[H, W] continuous-Gabor approximation of neuron n's linear RF (simple: its phase; complex: phase 0)."""
    y = np.arange(frame_shape[0])[:, None] - population["position"][n, 1]
    x = np.arange(frame_shape[1])[None, :] - population["position"][n, 0]
    sigma = float(population["sigma"][n])
    theta = float(population["orientation"][n])
    f = np.array([np.sin(theta), np.cos(theta)]) / float(population["wavelength"][n])
    phase = float(population["phase"][n]) if population["cell_type"][n] == SIMPLE else 0.0
    kappa = np.exp(-2 * np.pi**2 * sigma**2 * (f @ f))
    envelope = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return envelope * (np.cos(2 * np.pi * (f[0] * y + f[1] * x) + phase) - kappa * np.cos(phase))


# ----------------------------------------------------------------------------- temporal stage


def temporal_filter(x: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """[T, N] causal per-neuron FIR filter (kernels [N, L]); the screen was gray before t = 0.

    A complex64 input is filtered as interleaved real/imaginary float32 columns: half the
    multiplications of complex arithmetic with a real kernel.
    """
    if np.iscomplexobj(x):
        parts = np.ascontiguousarray(x, np.complex64).view(np.float32)  # [T, 2N]
        return temporal_filter(parts, np.repeat(kernels, 2, axis=0)).view(np.complex64)
    y = x * kernels[:, 0]
    for lag in range(1, min(kernels.shape[1], x.shape[0])):
        y[lag:] += x[:-lag] * kernels[:, lag]
    return y


def drive(z: np.ndarray, population: dict[str, np.ndarray]) -> np.ndarray:
    """[T, N] real drive: simple cells Re(e^{-i phase} z), complex cells |z|."""
    out = np.abs(z)
    simple = np.flatnonzero(population["cell_type"] == SIMPLE)
    rotation = np.exp(-1j * population["phase"][simple]).astype(np.complex64)
    out[:, simple] = (z[:, simple] * rotation).real
    return out


def stimulus_rate(u: np.ndarray, population: dict[str, np.ndarray]) -> np.ndarray:
    """[T, N] rectified power of the standardized drive u (the power only where positive)."""
    p = population
    x = np.asarray(u - p["threshold"], np.float32)
    active = x > 0
    out = np.zeros_like(x)
    np.power(x, np.broadcast_to(p["exponent"], x.shape), out=out, where=active)
    out *= p["amplitude"]
    return out


def compound_poisson(rng: np.random.Generator, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Events of random size: mean `mean`, variance scale * mean, exact zeros between events.

    Poisson(2 mean / scale) events, each of Exp(scale / 2) amplitude (Tweedie, like calcium
    transients from spikes). The event count comes from one uniform by inverse CDF, so
    the cost is a uniform per value plus work on the few values with events.
    """
    mean = np.asarray(mean, np.float32)
    rate = 2 * mean / scale  # expected events per value
    u = rng.random(mean.shape, dtype=np.float32)
    p = np.exp(-rate)  # P(no event)
    events = np.flatnonzero(u.ravel() >= p.ravel())
    out = np.zeros(mean.size, np.float32)
    if events.size:
        lam = rate.ravel()[events].astype(np.float64)
        target = u.ravel()[events].astype(np.float64)
        term = p.ravel()[events].astype(np.float64)
        cdf = term.copy()
        count = np.zeros(events.size, np.int64)
        pending = np.arange(events.size)
        while pending.size:  # smallest n with CDF(n) > u
            count[pending] += 1
            term[pending] *= lam[pending] / count[pending]
            cdf[pending] += term[pending]
            pending = pending[(cdf[pending] <= target[pending]) & (term[pending] > 1e-300)]
        sizes = rng.standard_gamma(count.astype(np.float64))
        out[events] = sizes * np.broadcast_to(scale / 2, mean.shape).ravel()[events]
    return out.reshape(mean.shape)


def calcium(x: np.ndarray, tau: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """[T, N] exponential smoothing y_t = a y_{t-1} + (1 - a) x_t (unit DC gain), y_{-1} = initial."""
    a = np.exp(-1.0 / tau).astype(x.dtype)
    b = (1 - a).astype(x.dtype)
    y = np.empty_like(x)
    state = initial.astype(x.dtype)
    for t in range(x.shape[0]):
        state = a * state + b * x[t]
        y[t] = state
    return y


def calcium_noise_factor(tau: np.ndarray) -> np.ndarray:
    """Sum of the squared calcium kernel taps: noise variance kept by the smoothing."""
    a = np.exp(-1.0 / np.asarray(tau, np.float64))
    return (1 - a) / (1 + a)


# ----------------------------------------------------------------------------- behaviour


def sample_mouse_behavior_model(rng: np.random.Generator) -> dict[str, Any]:
    """Mouse-level constants of the behaviour model and of the eye-to-screen map."""
    rotation = rng.normal(0, 0.3)
    gain = rng.uniform(0.25, 0.4)  # screen pixels per eye-camera pixel
    cos, sin = np.cos(rotation), np.sin(rotation)
    return {
        "pupil_mean": float(rng.uniform(15, 30)),
        "pupil_log_std": 0.25,
        "running_max": float(rng.uniform(10, 25)),
        "pupil_center_mean": [float(rng.uniform(150, 250)), float(rng.uniform(100, 160))],
        "eye_to_screen": (gain * np.array([[cos, -sin], [sin, cos]])).tolist(),
    }


def video_behavior(rng: np.random.Generator, n_frames: int, model: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """behavior [2, T] (pupil dilation, running speed) and pupil_center [2, T] (x, y), smooth processes."""
    state = smooth_series(rng, n_frames, sigma=45.0, channels=3)
    running = model["running_max"] * np.log1p(np.exp(4 * (state[0] - 0.3))) / 4
    running += 0.3 * np.abs(smooth_series(rng, n_frames, sigma=3.0)[0])
    arousal = 0.7 * state[1] + 0.5 * np.tanh(state[0])
    pupil = model["pupil_mean"] * np.exp(model["pupil_log_std"] * arousal)
    pupil_center = _eye_positions(rng, n_frames, model, running / model["running_max"])
    return np.stack([pupil, running]).astype(np.float32), pupil_center.astype(np.float32)


def _eye_positions(rng: np.random.Generator, n: int, model: dict[str, Any], running: np.ndarray) -> np.ndarray:
    """[2, n] eye-camera pupil position: slow drift plus saccades (more when running) that relax back."""
    drift = 3.0 * smooth_series(rng, n, sigma=40.0, channels=2)
    saccade_probability = (0.2 + 0.6 * np.clip(running, 0, 1)) / 30  # per frame
    times = np.flatnonzero(rng.random(n) < saccade_probability)
    jumps = rng.normal(0, 1, (2, times.size)) * np.array([[6.0], [3.0]])
    steps = np.zeros((2, n))
    steps[:, times] = jumps
    position = np.zeros((2, n))
    level = np.zeros(2)
    relax = np.exp(-1 / 60.0)
    for t in range(n):  # cumulative jumps decaying back to the resting position
        level = relax * level + steps[:, t]
        position[:, t] = level
    position = np.stack([np.convolve(row, np.ones(3) / 3, mode="same") for row in position])  # 100 ms blur
    return np.asarray(model["pupil_center_mean"])[:, None] + drift + position


def static_behavior(rng: np.random.Generator, n_trials: int, model: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """behavior [n, 3] (pupil, its derivative, running) and pupil_center [n, 2] over a session."""
    fine = 4  # samples per trial, for the derivative
    state = smooth_series(rng, n_trials * fine, sigma=10.0 * fine, channels=2)
    running = model["running_max"] * np.log1p(np.exp(4 * (state[0] - 0.3))) / 4
    arousal = 0.7 * state[1] + 0.5 * np.tanh(state[0])
    pupil = model["pupil_mean"] * np.exp(model["pupil_log_std"] * arousal)
    derivative = np.gradient(pupil) * fine
    at = np.arange(n_trials) * fine
    center = _eye_positions(rng, n_trials * fine, model, running / model["running_max"])[:, at]
    behavior = np.stack([pupil[at], derivative[at], running[at]], 1)
    return behavior.astype(np.float32), center.T.astype(np.float32)


def eye_shift(pupil_center: np.ndarray, model: dict[str, Any]) -> np.ndarray:
    """[T, 2] RF shift on the screen (dx, dy pixels) from pupil_center [T, 2] (camera pixels)."""
    centered = np.asarray(pupil_center, np.float64) - np.asarray(model["pupil_center_mean"])
    return centered @ np.asarray(model["eye_to_screen"]).T


def behavior_gain(
    pupil: np.ndarray, running: np.ndarray, population: dict[str, np.ndarray], model: dict[str, Any]
) -> np.ndarray:
    """[T, N] multiplicative gain exp(b_run * running / running_max + b_pupil * z_pupil)."""
    z_pupil = np.log(np.maximum(pupil, 1e-3) / model["pupil_mean"]) / model["pupil_log_std"]
    z_running = running / model["running_max"]
    exponent = np.outer(z_running, population["beta_running"]) + np.outer(z_pupil, population["beta_pupil"])
    return np.exp(exponent).astype(np.float32)
