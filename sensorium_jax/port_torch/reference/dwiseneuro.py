"""The first-place DwiseNeuro (lRomul/sensorium) module structure and names, evaluation path.

`core.stem` (conv, BatchNormAct), `core.blocks` alternating PositionalEncoding3d and
InvertedResidual3d (conv_pw, spat_covn_dw, temp_covn_dw, se, conv_pwl, bn_sc), `pool`,
`cortex.layers` of ShuffleLayer (conv, bn, bn_sc), `readouts` of Readout (layer = Dropout1d +
grouped Conv1d, softplus gate). Input [B, 5, T, H, W] -> per mouse [B, N, T].
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BatchNormAct(nn.Module):
    def __init__(self, channels: int, bn_layer=nn.BatchNorm3d, act: bool = True):
        super().__init__()
        self.bn = bn_layer(channels)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class SqueezeExcite3d(nn.Module):
    def __init__(self, channels: int, reduce_ratio: int):
        super().__init__()
        hidden = channels // reduce_ratio
        self.conv_reduce = nn.Conv3d(channels, hidden, 1, bias=True)
        self.act1 = nn.SiLU()
        self.conv_expand = nn.Conv3d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3, 4), keepdim=True))))
        return x * torch.sigmoid(s)


class InvertedResidual3d(nn.Module):
    def __init__(self, cin: int, cout: int, spatial_kernel: int, temporal_kernel: int, stride: int,
                 expansion: int, se_ratio: int):
        super().__init__()
        mid, self.stride, self.cout = cin * expansion, stride, cout
        self.conv_pw = nn.Sequential(nn.Conv3d(cin, mid, 1, bias=False), BatchNormAct(mid))
        self.spat_covn_dw = nn.Sequential(
            nn.Conv3d(mid, mid, (1, spatial_kernel, spatial_kernel), stride=(1, stride, stride),
                      padding=(0, spatial_kernel // 2, spatial_kernel // 2), groups=mid, bias=False),
            BatchNormAct(mid))
        self.temp_covn_dw = nn.Sequential(
            nn.Conv3d(mid, mid, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0), groups=mid,
                      bias=False),
            BatchNormAct(mid))
        self.se = SqueezeExcite3d(mid, se_ratio)
        self.conv_pwl = nn.Sequential(nn.Conv3d(mid, cout, 1, bias=False), BatchNormAct(cout, act=False))
        self.bn_sc = BatchNormAct(cout, act=False)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        _, c, t, h, w = x.shape
        if self.stride > 1:
            size = (t, math.ceil(h / self.stride), math.ceil(w / self.stride))
            x = nn.functional.interpolate(x, size=size, mode="nearest")
        if c != self.cout:
            x = torch.tile(x, (1, math.ceil(self.cout / c), 1, 1, 1))[:, : self.cout]
        return self.bn_sc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_pwl(self.se(self.temp_covn_dw(self.spat_covn_dw(self.conv_pw(x)))))
        return y + self.shortcut(x)


class PositionalEncoding3d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.orig_channels = channels
        self.channels = math.ceil(channels / 6) * 2
        inv_freq = 1.0 / (10000 ** (torch.arange(0, self.channels, 2).float() / self.channels))
        self.register_buffer("inv_freq", inv_freq)

    def emb(self, n: int) -> torch.Tensor:
        angles = torch.einsum("i,j->ij", self.inv_freq, torch.arange(n).float())
        return torch.cat([angles.sin(), angles.cos()], dim=0)  # [channels, n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, t, h, w = x.shape
        c = self.channels
        e = torch.zeros(3 * c, t, h, w)
        e[:c] = self.emb(t)[:, :, None, None]
        e[c: 2 * c] = self.emb(h)[:, None, :, None]
        e[2 * c:] = self.emb(w)[:, None, None, :]
        return x + e[None, : self.orig_channels]


class ShuffleLayer(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.cin, self.cout, self.groups = cin, cout, groups
        self.conv = nn.Conv1d(cin, cout, 1, groups=groups, bias=False)
        self.bn = BatchNormAct(cout, nn.BatchNorm1d)
        self.bn_sc = BatchNormAct(cout, nn.BatchNorm1d, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        b, c, t = y.shape
        y = y.view(b, self.groups, -1, t).transpose(1, 2).reshape(b, -1, t)
        skip = torch.tile(x, (1, math.ceil(self.cout / self.cin), 1))[:, : self.cout]
        return y + self.bn_sc(skip)


class Cortex(nn.Module):
    def __init__(self, cin: int, features: tuple[int, ...], groups: int):
        super().__init__()
        self.layers = nn.Sequential(*[ShuffleLayer(a, b, groups) for a, b in zip((cin, *features[:-1]), features)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Readout(nn.Module):
    def __init__(self, cin: int, n: int, groups: int, beta: float):
        super().__init__()
        self.n = n
        self.layer = nn.Sequential(nn.Dropout1d(0.4), nn.Conv1d(cin, math.ceil(n / groups) * groups, 1,
                                                                groups=groups, bias=True))
        self.gate = nn.Softplus(beta=beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.layer(x)[:, : self.n])


class DepthwiseCore(nn.Module):
    def __init__(self, cin: int, features: tuple[int, ...], strides: tuple[int, ...], spatial_kernel: int,
                 temporal_kernel: int, expansion: int, se_ratio: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(cin, features[0], 1, bias=False), BatchNormAct(features[0], act=False))
        blocks = []
        for i, (c, s) in enumerate(zip(features, strides)):
            nxt = features[i + 1] if i < len(features) - 1 else c
            blocks += [PositionalEncoding3d(c),
                       InvertedResidual3d(c, nxt, spatial_kernel, temporal_kernel, s, expansion, se_ratio)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


class DwiseNeuro(nn.Module):
    def __init__(self, readout_outputs: tuple[int, ...], in_channels: int, core_features: tuple[int, ...],
                 spatial_strides: tuple[int, ...], spatial_kernel: int, temporal_kernel: int, expansion_ratio: int,
                 se_reduce_ratio: int, cortex_features: tuple[int, ...], groups: int, softplus_beta: float):
        super().__init__()
        self.core = DepthwiseCore(in_channels, core_features, spatial_strides, spatial_kernel, temporal_kernel,
                                  expansion_ratio, se_reduce_ratio)
        self.pool = nn.AdaptiveAvgPool3d((None, 1, 1))
        self.cortex = Cortex(core_features[-1], cortex_features, groups)
        self.readouts = nn.ModuleList([Readout(cortex_features[-1], n, groups, softplus_beta)
                                       for n in readout_outputs])

    def forward(self, x: torch.Tensor, index: int) -> torch.Tensor:
        x = self.pool(self.core(x)).squeeze(-1).squeeze(-1)
        return self.readouts[index](self.cortex(x))
