"""Image transforms, applied to uint8 tensors C x H x W (torchvision.transforms.v2).

Two kinds, each dataset declares one:

- ``imagenet`` (natural images; the recipe of the official NC-OOD code and of DeiT/timm):
  train = RandomResizedCrop(size, bicubic) + RandomHorizontalFlip;
  eval  = Resize(int(256/224 * size), bicubic) + CenterCrop(size).
- ``small`` (the 28-px embedded data): train = Resize(size) + RandomCrop(size, padding=size//8)
  + RandomHorizontalFlip; eval = Resize(size).

Both end with :class:`NormalizeRGB`: scale to [0, 1], replicate a grayscale channel to three,
and normalize each channel with the ImageNet statistics, x' = (x / 255 - mean_c) / std_c.
"""
from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRANSFORM_KINDS = ("imagenet", "small")


class NormalizeRGB:
    """uint8 image (1 or 3 channels) -> float32 3 x H x W, x' = (x / 255 - mean_c) / std_c.

    One fused step in place of ToDtype + RGB + Normalize, which matters for the 28-px data
    where the per-call overhead dominates.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean = torch.tensor(self.mean).view(3, 1, 1)
        self._std = torch.tensor(self.std).view(3, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"NormalizeRGB expects a uint8 image with 1 or 3 channels, got {image.dtype} {tuple(image.shape)}")
        scaled = image.to(torch.float32).div_(255.0).expand(3, -1, -1)
        return (scaled - self._mean.to(image.device)).div_(self._std.to(image.device))

    def __repr__(self) -> str:
        return f"NormalizeRGB(mean={self.mean}, std={self.std})"


def build_transform(train: bool, image_size: int, kind: str) -> v2.Compose:
    """The training (``train=True``) or evaluation transform of a dataset kind (see module docstring)."""
    if image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size}")
    bicubic = InterpolationMode.BICUBIC
    if kind == "imagenet":
        if train:
            spatial = [v2.RandomResizedCrop(image_size, interpolation=bicubic, antialias=True),
                       v2.RandomHorizontalFlip()]
        else:
            spatial = [v2.Resize(int(256 / 224 * image_size), interpolation=bicubic, antialias=True),
                       v2.CenterCrop(image_size)]
    elif kind == "small":
        spatial = [v2.Resize(image_size, antialias=True)]
        if train:
            spatial += [v2.RandomCrop(image_size, padding=image_size // 8), v2.RandomHorizontalFlip()]
    else:
        raise ValueError(f"unknown transform kind {kind!r}; use one of {', '.join(TRANSFORM_KINDS)}")
    return v2.Compose([*spatial, NormalizeRGB()])
