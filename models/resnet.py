"""ResNet-18 / ResNet-34 encoders (He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016) with BasicBlocks, ending in global average pooling.

Stems: ``'imagenet'`` = 7x7 stride-2 conv + 3x3 stride-2 max-pool (224 px inputs);
``'cifar'`` = 3x3 stride-1 conv, no max-pool (28-64 px inputs).
Widths: stage channels ``int(c * width)`` for c = 64, 128, 256, 512, so
``embed_dim = int(512 * width)`` (width 1.0 -> 512, 0.25 -> 128).
With ``norm='gn_ws'`` the last GroupNorm of every residual branch starts at zero, as in the
official NC-controlled ResNets; with ``norm='bn'`` all norm weights start at one.
Hookable stages: ``layer1`` .. ``layer4`` (B x C x H x W).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from models.layers import check_cnn_kwargs, conv2d, norm2d, scaled
from models.registry import register_model

STAGE_CHANNELS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """``relu(norm(conv3x3(relu(norm(conv3x3(x))))) + shortcut(x))``."""

    def __init__(self, norm: str, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv2d(norm, in_ch, out_ch, 3, stride=stride, padding=1)
        self.norm1 = norm2d(norm, out_ch)
        self.conv2 = conv2d(norm, out_ch, out_ch, 3, padding=1)
        self.norm2 = norm2d(norm, out_ch, zero_init=(norm == "gn_ws"))
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv2d(norm, in_ch, out_ch, 1, stride=stride), norm2d(norm, out_ch))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """Stem -> layer1..layer4 -> global average pool -> B x embed_dim."""

    def __init__(self, blocks_per_stage: tuple[int, ...], norm: str, stem: str, width: float, in_chans: int) -> None:
        super().__init__()
        channels = [scaled(c, width) for c in STAGE_CHANNELS]
        if stem == "imagenet":
            self.stem = nn.Sequential(conv2d(norm, in_chans, channels[0], 7, stride=2, padding=3),
                                      norm2d(norm, channels[0]), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        else:
            self.stem = nn.Sequential(conv2d(norm, in_chans, channels[0], 3, stride=1, padding=1),
                                      norm2d(norm, channels[0]), nn.ReLU(inplace=True))
        in_ch = channels[0]
        for index, (out_ch, n_blocks) in enumerate(zip(channels, blocks_per_stage)):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(norm, in_ch, out_ch, stride)]
            blocks += [BasicBlock(norm, out_ch, out_ch, 1) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            in_ch = out_ch
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed_dim = channels[-1]

    def stages(self) -> "OrderedDict[str, nn.Module]":
        return OrderedDict((f"layer{i}", getattr(self, f"layer{i}")) for i in range(1, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


@register_model
def resnet18(*, norm: str, stem: str, width: float, in_chans: int, img_size: int, patch_size: int,
             drop_path: float) -> ResNetEncoder:
    """ResNet-18: BasicBlocks (2, 2, 2, 2)."""
    check_cnn_kwargs("resnet18", norm, drop_path)
    return ResNetEncoder((2, 2, 2, 2), norm, stem, width, in_chans)


@register_model
def resnet34(*, norm: str, stem: str, width: float, in_chans: int, img_size: int, patch_size: int,
             drop_path: float) -> ResNetEncoder:
    """ResNet-34: BasicBlocks (3, 4, 6, 3)."""
    check_cnn_kwargs("resnet34", norm, drop_path)
    return ResNetEncoder((3, 4, 6, 3), norm, stem, width, in_chans)
