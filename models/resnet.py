"""ResNet-18 / ResNet-34 encoders (He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016) with BasicBlocks, ending in global average pooling.

Stems: ``'imagenet'`` = 7x7 stride-2 conv + 3x3 stride-2 max-pool (224 px inputs);
``'cifar'`` = 3x3 stride-1 conv, no max-pool (28-64 px inputs).
Widths: stage channels ``int(c * width)`` for c = 64, 128, 256, 512, so
``embed_dim = int(512 * width)`` (width 1.0 -> 512, 0.25 -> 128).
Initialization, as in the official code for each norm: ``norm='bn'`` (``resnet/resnet.py``, the
baselines) Kaiming-normal convolutions with fan_in, all norm weights one, and a classifier weight
Kaiming-normal with fan_in (ReLU gain); ``norm='gn_ws'`` (``resnet_etf.py``, the NC-controlled
ResNets) Kaiming-normal convolutions with fan_out, the last GroupNorm of every residual branch
zero, and a Xavier-uniform classifier weight. The classifier bias keeps PyTorch's default
U(-1/sqrt(d), 1/sqrt(d)) in both (see :meth:`ResNetEncoder.init_classifier`).
Hookable stages: ``layer1`` .. ``layer4`` (B x C x H x W); :meth:`ResNetEncoder.last_conv` is the
second convolution of the last block (``layer4.1.conv2`` for ResNet-18, ``layer4.2.conv2`` for
ResNet-34), whose output, before its norm, the residual add and the activation, the official
evaluation hooks.

Options of the DDU ResNets (Mukhoti et al., "Deep Deterministic Uncertainty", CVPR 2023; used
by Haas, Yolland & Rabus, TMLR, for their L2-normalized-feature ResNets). DDU's ``mod`` flag is
the pair ``activation='leaky_relu', shortcut='avgpool'``; its ``-sn --coeff 3`` is ``spectral_norm=3.0``.

- ``activation``: ``'relu'`` or ``'leaky_relu'`` (slope 0.01) in the stem and every block.
  The Kaiming init is unchanged (with slope ~0 its gain is the ReLU gain).
- ``shortcut`` of a block that changes stride or width: ``'conv'`` = 1x1 strided conv + norm
  (He et al.'s projection); ``'avgpool'`` = DDU's parameter-free :class:`AvgPoolShortcut`.
- ``spectral_norm`` > 0: soft spectral normalization (:mod:`models.spectral`) with this
  coefficient on every convolution, the stem and 1x1 shortcut convs included, one power
  iteration per training forward. It needs ``norm='bn'`` (DDU's setting): a weight-standardized
  convolution rescales each filter after any weight parametrization and so would undo it.
  Every convolution here feeds a norm layer, which cancels a per-layer scale of its input up
  to the norm's eps; the normalization therefore acts mostly through the gradients, as in DDU's
  BatchNorm ResNets.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import activation_layer, check_norm, conv2d, norm2d, scaled
from models.registry import register_model
from models.spectral import spectral_normalize_convs

STAGE_CHANNELS = (64, 128, 256, 512)


class AvgPoolShortcut(nn.Module):
    """DDU's parameter-free shortcut: ``cat(pool(x), zeros)`` with ``out_ch - in_ch`` zero
    channels appended after the ``in_ch`` input channels.

    ``pool`` is a ``stride`` x ``stride`` average pool with that stride when height and width
    are multiples of ``stride``; otherwise a strided subsampling (average pool with kernel 1),
    so the output has ``ceil(H / stride)`` rows like the strided 3x3 conv branch (DDU checks the
    height's parity for its stride 2; 28 px inputs reach 7x7 before the last stage).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"an average-pool shortcut can only add channels, got {in_ch} -> {out_ch}")
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        kernel = self.stride if height % self.stride == 0 and width % self.stride == 0 else 1
        x = F.avg_pool2d(x, kernel, self.stride)
        return F.pad(x, (0, 0, 0, 0, 0, self.out_ch - self.in_ch))

    def extra_repr(self) -> str:
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}"


class BasicBlock(nn.Module):
    """``act(norm(conv3x3(act(norm(conv3x3(x))))) + shortcut(x))``."""

    def __init__(self, norm: str, in_ch: int, out_ch: int, stride: int, activation: str = "relu",
                 shortcut: str = "conv") -> None:
        super().__init__()
        self.conv1 = conv2d(norm, in_ch, out_ch, 3, stride=stride, padding=1)
        self.norm1 = norm2d(norm, out_ch)
        self.conv2 = conv2d(norm, out_ch, out_ch, 3, padding=1)
        self.norm2 = norm2d(norm, out_ch, zero_init=(norm == "gn_ws"))
        self.act = activation_layer(activation)
        if stride == 1 and in_ch == out_ch:
            self.shortcut = nn.Identity()
        elif shortcut == "avgpool":
            self.shortcut = AvgPoolShortcut(in_ch, out_ch, stride)
        else:
            self.shortcut = nn.Sequential(conv2d(norm, in_ch, out_ch, 1, stride=stride), norm2d(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """Stem -> layer1..layer4 -> global average pool -> B x embed_dim."""

    def __init__(self, blocks_per_stage: tuple[int, ...], norm: str, stem: str, width: float, in_chans: int,
                 spectral_norm: float = 0.0, activation: str = "relu", shortcut: str = "conv") -> None:
        super().__init__()
        channels = [scaled(c, width) for c in STAGE_CHANNELS]
        if stem == "imagenet":
            self.stem = nn.Sequential(conv2d(norm, in_chans, channels[0], 7, stride=2, padding=3),
                                      norm2d(norm, channels[0]), activation_layer(activation),
                                      nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        else:
            self.stem = nn.Sequential(conv2d(norm, in_chans, channels[0], 3, stride=1, padding=1),
                                      norm2d(norm, channels[0]), activation_layer(activation))
        in_ch = channels[0]
        for index, (out_ch, n_blocks) in enumerate(zip(channels, blocks_per_stage)):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(norm, in_ch, out_ch, stride, activation, shortcut)]
            blocks += [BasicBlock(norm, out_ch, out_ch, 1, activation, shortcut) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            in_ch = out_ch
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed_dim = channels[-1]
        self.norm = norm
        if norm == "bn":  # the official BatchNorm ResNet: every convolution Kaiming-normal with fan_in
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if spectral_norm:
            spectral_normalize_convs(self, spectral_norm)

    def stages(self) -> "OrderedDict[str, nn.Module]":
        return OrderedDict((f"layer{i}", getattr(self, f"layer{i}")) for i in range(1, 5))

    def last_conv(self) -> nn.Module:
        """The last convolution of the backbone: ``conv2`` of the last block of ``layer4``."""
        return self.layer4[-1].conv2

    def init_classifier(self, linear: nn.Linear) -> None:
        """The official classifier weight init for this norm (bias: PyTorch's default)."""
        if self.norm == "bn":
            nn.init.kaiming_normal_(linear.weight, mode="fan_in", nonlinearity="relu")
        else:
            nn.init.xavier_uniform_(linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


def _build_resnet(arch: str, blocks_per_stage: tuple[int, ...], *, norm: str, stem: str, width: float,
                  in_chans: int, img_size: int, spectral_norm: float, activation: str, shortcut: str) -> ResNetEncoder:
    """A ResNet encoder; ``img_size`` does not shape it (any input size)."""
    check_norm(norm)
    if spectral_norm and norm != "bn":
        raise ValueError(f"{arch}: spectral_norm needs norm='bn' (weight standardization rescales every filter "
                         f"and would undo it); use norm='bn' or spectral_norm=0")
    return ResNetEncoder(blocks_per_stage, norm, stem, width, in_chans, spectral_norm, activation, shortcut)


@register_model
def resnet18(**options) -> ResNetEncoder:
    """ResNet-18: BasicBlocks (2, 2, 2, 2)."""
    return _build_resnet("resnet18", (2, 2, 2, 2), **options)


@register_model
def resnet34(**options) -> ResNetEncoder:
    """ResNet-34: BasicBlocks (3, 4, 6, 3)."""
    return _build_resnet("resnet34", (3, 4, 6, 3), **options)
