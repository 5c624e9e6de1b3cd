"""VGG17 encoder: the 16 convolutional layers of VGG19 (Simonyan & Zisserman, "Very Deep
Convolutional Networks for Large-Scale Image Recognition", ICLR 2015) without its three
fully connected layers, followed by global average pooling.

The official NC-OOD code names it VGG17: 16 conv layers plus the one linear classifier.
Five blocks of (2, 2, 4, 4, 4) 3x3 conv -> norm -> ReLU layers with (64, 128, 256, 512, 512)
channels (times ``width``), each block ending in a 2x2 stride-2 max-pool; ``embed_dim =
int(512 * width)``. The max-pools round up (``ceil_mode=True``), which equals the usual
floor pooling whenever the size is divisible by 32 (224 px -> 7x7, 32 px -> 1x1) and keeps
28 px inputs valid (-> 1x1). CIFAR-style VGGs keep all five pools, so ``stem='cifar'`` and
``stem='imagenet'`` build the same network. ``conv_bias=True`` gives every convolution a bias,
as in the official BatchNorm VGG (redundant before a norm, but it shifts the last
convolution's output, the official hook point); the default is bias-free.
Hookable stages: ``block1`` .. ``block5`` (B x C x H x W, each after its max-pool);
:meth:`VGGEncoder.last_conv` is the last convolution of ``block5`` (``block5.9``), the layer the
official code hooks as ``features.49`` (its flat ``features`` list holds the same modules in the
same order: 3 per conv layer, 1 per max-pool, so the 16th convolution is entry 49).
Initialization as the official ``vgg/vgg.py`` and ``vgg_etf.py``: Kaiming-normal convolutions
(fan_out; the conv biases of ``conv_bias=True`` PyTorch's default), norm weights one, a
Xavier-uniform classifier weight with PyTorch's default bias.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from models.layers import check_norm, conv2d, norm2d, scaled
from models.registry import register_model

VGG17_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))


class VGGEncoder(nn.Module):
    """block1..block5 -> global average pool -> B x embed_dim."""

    def __init__(self, blocks: tuple[tuple[int, int], ...], norm: str, width: float, in_chans: int,
                 conv_bias: bool = False) -> None:
        super().__init__()
        in_ch = in_chans
        for index, (n_convs, channels) in enumerate(blocks):
            out_ch = scaled(channels, width)
            layers: list[nn.Module] = []
            for _ in range(n_convs):
                layers += [conv2d(norm, in_ch, out_ch, 3, padding=1, bias=conv_bias), norm2d(norm, out_ch),
                           nn.ReLU(inplace=True)]
                in_ch = out_ch
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            setattr(self, f"block{index + 1}", nn.Sequential(*layers))
        self.num_blocks = len(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed_dim = in_ch

    def stages(self) -> "OrderedDict[str, nn.Module]":
        return OrderedDict((f"block{i}", getattr(self, f"block{i}")) for i in range(1, self.num_blocks + 1))

    def last_conv(self) -> nn.Module:
        """The last convolution of the backbone (in the last block, before its norm and ReLU)."""
        last_block = getattr(self, f"block{self.num_blocks}")
        return [m for m in last_block if isinstance(m, nn.Conv2d)][-1]

    def init_classifier(self, linear: nn.Linear) -> None:
        """The official classifier init: Xavier-uniform weight, PyTorch's default bias."""
        nn.init.xavier_uniform_(linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.stages().values():
            x = block(x)
        return torch.flatten(self.pool(x), 1)


@register_model
def vgg17(*, norm: str, stem: str, width: float, in_chans: int, img_size: int, conv_bias: bool = False) -> VGGEncoder:
    """VGG17 (VGG19's conv layers); neither ``stem`` nor ``img_size`` changes it (see the module docstring)."""
    check_norm(norm)
    return VGGEncoder(VGG17_BLOCKS, norm, width, in_chans, conv_bias)
