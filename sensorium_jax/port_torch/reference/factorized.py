"""The SENSORIUM 2023 starter kit's factorized baseline (neuralpredictors names and layouts).

`Factorized3dCore` -> `features.layer<i>` of (conv_spatial[_i], conv_temporal[_i], norm, nonlin);
`FullGaussian2d` with a cortex grid-mean predictor; `MLPShifter`; a `ModuleDict` per mouse for
the readouts and shifters; the encoder's ELU + 1 output.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Laplace(nn.Module):
    """The regulariser's fixed filter: a buffer the reference saves in its state dict."""

    def __init__(self, kernel: np.ndarray):
        super().__init__()
        self.register_buffer("filter", torch.from_numpy(kernel.astype(np.float32)))


class LaplaceL2norm(nn.Module):
    def __init__(self):
        super().__init__()
        self.laplace = Laplace(np.array([[[[0, -1, 0], [-1, 4, -1], [0, -1, 0]]]]))


class DepthLaplaceL21d(nn.Module):
    def __init__(self):
        super().__init__()
        self.laplace = Laplace(np.array([[[-1, 4, -1]]]))


class Factorized3dCore(nn.Module):
    """[B, C, T, H, W] -> [B, C', T', H', W']: per layer spatial (1,k,k) conv, temporal (kt,1,1)
    conv (both with bias, as the reference's; `bias=False` drops them, as our core does since
    BatchNorm's shift absorbs them), BatchNorm3d, ELU; spatial padding k // 2 when `padding`."""

    def __init__(self, input_channels: int, hidden_channels: list[int], spatial_input_kernel: int,
                 temporal_input_kernel: int, spatial_hidden_kernel: int, temporal_hidden_kernel: int,
                 padding: bool, momentum: float = 0.7, bias: bool = True):
        super().__init__()
        self._input_weight_regularizer = LaplaceL2norm()
        self.temporal_regularizer = DepthLaplaceL21d()
        self.features = nn.Sequential()
        ins = [input_channels, *hidden_channels[:-1]]
        for i, (ci, co) in enumerate(zip(ins, hidden_channels)):
            ks = spatial_input_kernel if i == 0 else spatial_hidden_kernel
            kt = temporal_input_kernel if i == 0 else temporal_hidden_kernel
            suffix = "" if i == 0 else f"_{i}"
            layer = OrderedDict()
            layer[f"conv_spatial{suffix}"] = nn.Conv3d(ci, co, (1, ks, ks), bias=bias,
                                                       padding=(0, ks // 2, ks // 2) if padding else 0)
            layer[f"conv_temporal{suffix}"] = nn.Conv3d(co, co, (kt, 1, 1), bias=bias)
            layer["norm"] = nn.BatchNorm3d(co, momentum=momentum)
            layer["nonlin"] = nn.ELU()
            self.features.add_module(f"layer{i}", nn.Sequential(layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class FullGaussian2d(nn.Module):
    """Evaluation path of the full Gaussian readout with a grid-mean predictor: mu from the
    normalized cortical coordinates (Linear, ELU, Linear, Tanh), clamped to [-1, 1], plus the
    shift, sampled with grid_sample (bilinear, zero padding, align_corners=True)."""

    def __init__(self, channels: int, outdims: int, source_grid: np.ndarray, hidden_features: int = 30):
        super().__init__()
        self.outdims = outdims
        self._features = nn.Parameter(torch.full((1, channels, 1, outdims), 1.0 / channels))
        self.sigma = nn.Parameter(torch.empty(1, outdims, 2, 2).uniform_(-0.1, 0.1))
        self.bias = nn.Parameter(torch.zeros(outdims))
        self.mu_transform = nn.Sequential(nn.Linear(source_grid.shape[1], hidden_features), nn.ELU(),
                                          nn.Linear(hidden_features, 2), nn.Tanh())
        grid = source_grid - source_grid.mean(axis=0, keepdims=True)
        grid = grid / np.abs(grid).max()
        self.register_buffer("source_grid", torch.from_numpy(grid.astype(np.float32)))

    @property
    def mu(self) -> torch.Tensor:
        return self.mu_transform(self.source_grid).view(1, self.outdims, 1, 2)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        bs, c = x.shape[:2]
        grid = torch.clamp(self.mu, -1, 1).expand(bs, self.outdims, 1, 2)
        if shift is not None:
            grid = grid + shift[:, None, None, :]
        y = F.grid_sample(x, grid, align_corners=True)  # mode bilinear, padding_mode zeros
        y = (y.squeeze(-1) * self._features.view(1, c, self.outdims)).sum(1).view(bs, self.outdims)
        return y + self.bias


class MLP(nn.Module):
    def __init__(self, input_features: int = 2, hidden_channels: int = 5, shift_layers: int = 3):
        super().__init__()
        layers, prev = [], input_features
        for _ in range(shift_layers - 1):
            layers += [nn.Linear(prev, hidden_channels), nn.Tanh()]
            prev = hidden_channels
        layers += [nn.Linear(prev, 2), nn.Tanh()]
        self.mlp = nn.Sequential(*layers)

    def forward(self, pupil_center: torch.Tensor) -> torch.Tensor:
        return self.mlp(pupil_center)


class VideoFiringRateEncoder(nn.Module):
    """core -> [B*T, C, H, W] -> readout[mouse](shift = shifter[mouse](pupil)) -> ELU + 1."""

    def __init__(self, core: nn.Module, readout: nn.ModuleDict, shifter: nn.ModuleDict | None):
        super().__init__()
        self.core, self.readout, self.shifter = core, readout, shifter

    def forward(self, inputs: torch.Tensor, data_key: str, pupil_center: torch.Tensor) -> torch.Tensor:
        x = self.core(inputs).transpose(1, 2)  # [B, T', C, H, W]
        b, t = x.shape[:2]
        shift = None
        if self.shifter is not None:
            pupil = pupil_center[:, :, -t:].transpose(1, 2).reshape(-1, 2)
            shift = self.shifter[data_key](pupil)
        x = self.readout[data_key](x.reshape(-1, *x.shape[2:]), shift=shift)
        return (F.elu(x) + 1).reshape(b, t, -1)
