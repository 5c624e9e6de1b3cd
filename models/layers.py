"""Convolution, normalization and activation layers shared by the CNN backbones.

``norm='bn'``: ``nn.Conv2d`` + BatchNorm (the official baselines).
``norm='gn_ws'``: weight-standardized convolutions + GroupNorm with 32 groups (the official
NC-controlled CNNs), for narrow layers ``min(32, channels)`` groups.
"""
from __future__ import annotations

import torch
from torch import nn

NORMS = ("bn", "gn_ws")
GN_GROUPS = 32
WS_EPS = 1e-5
LEAKY_RELU_SLOPE = 0.01


class WSConv2d(nn.Conv2d):
    """Conv2d with weight standardization (Qiao et al., "Micro-Batch Training with
    Batch-Channel Normalization and Weight Standardization", arXiv:1903.10520, 2019).

    Each output filter is standardized before the convolution:
    ``W_hat = (W - mean(W)) / (std(W) + 1e-5)`` with mean and unbiased std over the filter's
    (in_channels, kh, kw) entries, as in the official NC-OOD code.
    """

    def standardized_weight(self) -> torch.Tensor:
        std, mean = torch.std_mean(self.weight, dim=(1, 2, 3), keepdim=True, correction=1)
        return (self.weight - mean) / (std + WS_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def conv2d(norm: str, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
           bias: bool = False) -> nn.Conv2d:
    """Convolution, weight-standardized for ``gn_ws``, plain for ``bn``; bias-free unless ``bias``.

    Both inits are Kaiming-normal with fan_out (``N(0, 2 / (k*k*out_ch))``, the official init of
    the VGGs and of the NC-controlled ResNets; the BatchNorm ResNets re-initialize with fan_in, see
    :mod:`models.resnet`). A bias would be cancelled by the normalization that follows, but the
    official BatchNorm VGG has one, so ``bias=True`` (PyTorch's default bias init) hosts it.
    """
    cls = WSConv2d if norm == "gn_ws" else nn.Conv2d
    conv = cls(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def gn_groups(channels: int) -> int:
    """``min(32, channels)`` groups; they must divide ``channels``."""
    groups = min(GN_GROUPS, channels)
    if channels % groups:
        raise ValueError(f"GroupNorm with {groups} groups cannot split {channels} channels; "
                         f"choose a width multiplier that makes every channel count a multiple of 32 "
                         f"(or at most 32), or use norm='bn'")
    return groups


def norm2d(norm: str, channels: int, zero_init: bool = False) -> nn.Module:
    """BatchNorm2d or GroupNorm(min(32, channels)); weight 1 (0 with ``zero_init``), bias 0."""
    layer = nn.BatchNorm2d(channels) if norm == "bn" else nn.GroupNorm(gn_groups(channels), channels)
    nn.init.constant_(layer.weight, 0.0 if zero_init else 1.0)
    nn.init.zeros_(layer.bias)
    return layer


def activation_layer(activation: str) -> nn.Module:
    """``nn.ReLU`` for ``'relu'``; for ``'leaky_relu'`` ``nn.LeakyReLU`` with slope 0.01, the
    default of ``F.leaky_relu`` that the DDU ResNets use (their ``mod`` option). In place."""
    if activation == "relu":
        return nn.ReLU(inplace=True)
    if activation == "leaky_relu":
        return nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True)
    raise ValueError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}")


def scaled(channels: int, width: float) -> int:
    """``int(channels * width)``, at least 1."""
    out = int(channels * width)
    if out < 1:
        raise ValueError(f"width={width} leaves {channels} channels with none; use a larger width")
    return out
