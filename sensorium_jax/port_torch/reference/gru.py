"""The SENSORIUM 2023 GRU baseline (neuralpredictors names and layouts, evaluation path):
`RotationEquivariant2dCore` (Hermite filters from the reference's own construction: basis H
and rotation matrices Rs saved in the state dict), `GRU_Module` around a `ConvGRUCell`, and
the starter kit's encoder with a 2D core (frames folded into the batch)."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from numpy.polynomial.polynomial import polyval
from scipy.special import gamma
from torch import nn

from sensorium_jax.port_torch.reference.factorized import Laplace


def hermite_coefficients(mu: float, nu: float) -> np.ndarray:
    k = np.arange(nu + 1)
    numerator = gamma(mu + nu + 1) * gamma(nu + 1) * (-2.0) ** (nu - k)
    return numerator / (gamma(mu + 1 + k) * gamma(1 + k) * gamma(nu + 1 - k))


def hermite_2d(n: int, points: int, xmax: float) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Basis [n (n + 1) / 2, points, points] ('z' symmetric, 'r'/'i' pairs), unit norm each."""
    xmax *= 1 - 1 / points
    x = np.linspace(-xmax, xmax, points)[:, None]
    envelope = np.exp(-(x**2) / 4) @ np.exp(-(x.T**2) / 4)
    mu, nu, desc = [], [], []
    for rank in range(n):
        m = np.sort(np.abs(np.arange(-rank, rank + 0.1, 2)))
        mu += list(m)
        nu += list((rank - m) / 2)
        desc += (["z"] if rank % 2 == 0 else []) + ["r", "i"] * ((rank + 1) // 2)
    theta, radsq = np.arctan2(x, x.T), x**2 + x.T**2
    basis = np.zeros((len(mu), points, points))
    for i, (m, v, d) in enumerate(zip(mu, nu, desc)):
        f = envelope * radsq ** (m / 2) * polyval(radsq, hermite_coefficients(m, v)) * np.exp(1j * m * theta)
        f /= np.sqrt(2 ** (m + 2 * v) * np.pi * math.factorial(int(m + v)) * math.factorial(int(v)))
        basis[i] = f.real / np.sqrt(2) if d == "z" else (f.real if d == "r" else f.imag)
    return basis / np.sqrt(np.sum(basis**2, axis=(1, 2), keepdims=True)), desc, np.array(mu)


def rotation_matrix(desc: list[str], mu: np.ndarray, angle: float) -> np.ndarray:
    r = np.zeros((len(desc), len(desc)))
    for i, (d, m) in enumerate(zip(desc, mu)):
        if d == "r":
            r[i: i + 2, i: i + 2] = [[np.cos(m * angle), np.sin(m * angle)], [-np.sin(m * angle), np.cos(m * angle)]]
        elif d == "z":
            r[i, i] = 1
    return r


class RotateHermite(nn.Module):
    def __init__(self, size: int, upsampling: int, rotations: int, first_layer: bool):
        super().__init__()
        h, desc, mu = hermite_2d(size, size * upsampling, 2 * np.sqrt(size))
        self.H = nn.Parameter(torch.tensor(h, dtype=torch.float32), requires_grad=False)
        self.Rs = nn.ParameterList([
            nn.Parameter(torch.tensor(rotation_matrix(desc, mu, i * 2 * np.pi / rotations), dtype=torch.float32),
                         requires_grad=False) for i in range(rotations)])
        self.rotations, self.first_layer = rotations, first_layer

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        total = coeffs.shape[1]
        per = total // self.rotations
        out = []
        for i, r in enumerate(self.Rs):
            w = torch.tensordot(self.H, torch.tensordot(r, coeffs, dims=([1], [0])), dims=[[0], [0]])
            if i and not self.first_layer:
                shift = total - i * per
                w = torch.cat([w[:, :, shift:], w[:, :, :shift]], dim=2)
            out.append(w)
        return torch.cat(out, dim=3)


class HermiteConv2D(nn.Module):
    def __init__(self, cin: int, cout: int, size: int, padding: int, rotations: int, upsampling: int,
                 first_layer: bool):
        super().__init__()
        self.padding, self.upsampling = padding, upsampling
        self.coeffs = nn.Parameter(torch.randn(size * (size + 1) // 2, cin, cout) * 0.1)
        self.rotate_hermite = RotateHermite(size, upsampling, rotations, first_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.rotate_hermite(self.coeffs)
        f = self.upsampling
        w = sum(w[i::f, j::f] for i in range(f) for j in range(f))
        return F.conv2d(x, w.permute(3, 2, 0, 1), padding=self.padding)


class RotationEquivariantBatchNorm2D(nn.Module):
    def __init__(self, channels: int, rotations: int, momentum: float = 0.9):
        super().__init__()
        self.channels, self.rotations = channels, rotations
        self.batch_norm = nn.BatchNorm1d(channels, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        y = x.view(b, self.rotations, self.channels, h, w).permute(0, 2, 1, 3, 4).reshape(b, self.channels, -1)
        y = self.batch_norm(y).view(b, self.channels, self.rotations, h, w).permute(0, 2, 1, 3, 4)
        return y.reshape(b, self.rotations * self.channels, h, w)


class LaplaceL2norm(nn.Module):
    def __init__(self):
        super().__init__()
        self.laplace = Laplace(np.array([[[[0, -1, 0], [-1, 4, -1], [0, -1, 0]]]]))


class RotationEquivariant2dCore(nn.Module):
    """layer<l> = hermite_conv, norm (shared across rotations), nonlin (not after the last);
    the first convolution unpadded, the hidden ones padded by kernel // 2; the last layer out."""

    def __init__(self, cin: int, channels: int, input_kern: int, hidden_kern: int, layers: int, rotations: int,
                 upsampling: int = 2):
        super().__init__()
        self._input_weights_regularizer = LaplaceL2norm()
        self.features = nn.Sequential()
        for l in range(layers):
            layer = OrderedDict()
            first = l == 0
            layer["hermite_conv"] = HermiteConv2D(cin if first else channels * rotations, channels,
                                                  input_kern if first else hidden_kern,
                                                  0 if first else hidden_kern // 2, rotations, upsampling, first)
            layer["norm"] = RotationEquivariantBatchNorm2D(channels, rotations)
            if l < layers - 1:
                layer["nonlin"] = nn.ELU()
            self.features.add_module(f"layer{l}", nn.Sequential(layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ConvGRUCell(nn.Module):
    """`hidden_bias=False` drops the hidden convolutions' biases, as our GRU does (each adds to
    its input convolution's bias, so the network computes the same functions)."""

    def __init__(self, cin: int, channels: int, input_kern: int, rec_kern: int, hidden_bias: bool = True):
        super().__init__()
        self.channels = channels
        for gate in ("reset", "update", "out"):
            self.add_module(f"{gate}_gate_input", nn.Conv2d(cin, channels, input_kern, padding=input_kern // 2))
            self.add_module(f"{gate}_gate_hidden", nn.Conv2d(channels, channels, rec_kern, padding=rec_kern // 2,
                                                             bias=hidden_bias))

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        if h is None:
            h = torch.zeros(x.shape[0], self.channels, *x.shape[2:])
        update = torch.sigmoid(self.update_gate_input(x) + self.update_gate_hidden(h))
        reset = torch.sigmoid(self.reset_gate_input(x) + self.reset_gate_hidden(h))
        candidate = torch.tanh(self.out_gate_input(x) + self.out_gate_hidden(h * reset))
        return h * (1 - update) + candidate * update


class GRU_Module(nn.Module):  # noqa: N801 - the reference's name
    def __init__(self, cin: int, channels: int, input_kern: int, rec_kern: int, hidden_bias: bool = True):
        super().__init__()
        self.gru = ConvGRUCell(cin, channels, input_kern, rec_kern, hidden_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> hidden states [B, C', T, H, W]."""
        hidden, states = None, []
        for t in range(x.shape[2]):
            hidden = self.gru(x[:, :, t], hidden)
            states.append(hidden)
        return torch.stack(states, 2)


class VideoFiringRateEncoder2d(nn.Module):
    """2D core per frame, GRU over time, Gaussian readout with shifter, ELU + 1."""

    def __init__(self, core: nn.Module, readout: nn.ModuleDict, shifter: nn.ModuleDict, gru_module: nn.Module):
        super().__init__()
        self.core, self.readout, self.shifter, self.gru_module = core, readout, shifter, gru_module

    def forward(self, inputs: torch.Tensor, data_key: str, pupil_center: torch.Tensor) -> torch.Tensor:
        b, t = inputs.shape[0], inputs.shape[2]
        x = self.core(inputs.transpose(1, 2).reshape(b * t, *inputs.shape[1:2], *inputs.shape[3:]))
        x = self.gru_module(x.reshape(b, t, *x.shape[1:]).transpose(1, 2)).transpose(1, 2)
        pupil = pupil_center[:, :, -t:].transpose(1, 2).reshape(-1, 2)
        y = self.readout[data_key](x.reshape(b * t, *x.shape[2:]), shift=self.shifter[data_key](pupil))
        return (F.elu(y) + 1).reshape(b, t, -1)
