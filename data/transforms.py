"""Image transforms, applied to uint8 tensors C x H x W (torchvision.transforms.v2).

Two kinds, each dataset declares one:

- ``imagenet`` (natural images): train = RandomResizedCrop(size, ``interpolation``) +
  RandomHorizontalFlip; eval = Resize(int(256/224 * size), bicubic) + CenterCrop(size), the
  evaluation transform of the official NC-OOD code (CNNs and ViTs alike). The crop's
  interpolation is the caller's choice: the official pretraining, CNN and ViT alike, uses
  torchvision's default, bilinear.
- ``small`` (the 28-px embedded data): train = Resize(size) + RandomCrop(size, padding=size//8)
  + RandomHorizontalFlip (as :class:`RandomCropFlip`); eval = Resize(size).

Both end with :class:`NormalizeRGB`: scale to [0, 1], replicate a grayscale channel to three,
and normalize each channel, x' = (x / 255 - mean_c) / std_c, with the ImageNet statistics unless
the caller passes others (the official CNN evaluation normalizes CIFAR with CIFAR's own).

Batches: every step of the ``small`` kind and of the ``imagenet`` evaluation transform also takes
a batch B x C x H x W and then equals the step applied to each sample in turn
(:func:`batch_safe` says which transforms do). A torchvision random transform would draw one
set of parameters for a whole batch; :class:`RandomCropFlip` draws them per sample instead.
In-memory datasets use this to augment a batch in a few tensor operations
(:meth:`data.dataset.TensorImageDataset.__getitems__`).
"""
from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRANSFORM_KINDS = ("imagenet", "small")
INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


class NormalizeRGB:
    """uint8 image (1 or 3 channels) -> float32 3 x H x W, x' = (x / 255 - mean_c) / std_c;
    a batch B x C x H x W -> B x 3 x H x W.

    One fused step in place of ToDtype + RGB + Normalize, which matters for the 28-px data
    where the per-call overhead dominates.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean = torch.tensor(self.mean).view(3, 1, 1)
        self._std = torch.tensor(self.std).view(3, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.dim() not in (3, 4) or image.shape[-3] not in (1, 3):
            raise ValueError(f"NormalizeRGB expects a uint8 image (or batch) with 1 or 3 channels, "
                             f"got {image.dtype} {tuple(image.shape)}")
        scaled = image.to(torch.float32).div_(255.0).expand(*image.shape[:-3], 3, -1, -1)
        return (scaled - self._mean.to(image.device)).div_(self._std.to(image.device))

    def __repr__(self) -> str:
        return f"NormalizeRGB(mean={self.mean}, std={self.std})"


class RandomCropFlip:
    """RandomCrop(size, padding) (zero padding) then RandomHorizontalFlip(p), with parameters
    drawn per sample: on a batch B x C x H x W each sample gets its own crop offsets and flip.

    The draws are the ones torchvision's ``v2.RandomCrop(size, padding=padding)`` followed by
    ``v2.RandomHorizontalFlip(p)`` make for one image (offset top, offset left, then the flip
    coin, from torch's global generator), taken for each sample of the batch in turn; so the
    output equals those two transforms applied sample by sample, exactly. The crop and the flip
    are then one gather over the zero-padded batch.
    """

    def __init__(self, size: int, padding: int, p: float = 0.5):
        self.size, self.padding, self.p = int(size), int(padding), float(p)

    def draw(self, height: int, width: int) -> tuple[int, int, bool]:
        """(top, left, flip) for one padded image of ``height`` x ``width``, as v2 draws them."""
        top = int(torch.randint(0, height - self.size + 1, size=())) if height > self.size else 0
        left = int(torch.randint(0, width - self.size + 1, size=())) if width > self.size else 0
        return top, left, bool(torch.rand(1) < self.p)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        single = images.dim() == 3
        batch = images[None] if single else images
        if self.padding:
            batch = v2.functional.pad(batch, [self.padding], fill=0)
        height, width = batch.shape[-2:]
        if height < self.size or width < self.size:
            raise ValueError(f"RandomCropFlip: crop size {self.size} is larger than the padded image {height} x {width}")
        draws = torch.tensor([self.draw(height, width) for _ in range(batch.shape[0])], dtype=torch.long)
        offsets = torch.arange(self.size)
        rows = draws[:, 0, None] + offsets  # B x size
        cols = draws[:, 1, None] + torch.where(draws[:, 2, None].bool(), offsets.flip(0), offsets)
        samples = torch.arange(batch.shape[0])[:, None, None, None]
        channels = torch.arange(batch.shape[1])[None, :, None, None]
        out = batch[samples, channels, rows[:, None, :, None], cols[:, None, None, :]]
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"RandomCropFlip(size={self.size}, padding={self.padding}, p={self.p})"


BATCH_SAFE_STEPS = (v2.Resize, v2.CenterCrop, NormalizeRGB, RandomCropFlip)


def batch_safe(transform) -> bool:
    """True when ``transform`` applied to a batch B x C x H x W equals it applied to each sample
    in turn: a ``v2.Compose`` of deterministic resizing/cropping, :class:`NormalizeRGB` and
    :class:`RandomCropFlip` (the ``small`` kind, the ``imagenet`` evaluation transform)."""
    steps = transform.transforms if isinstance(transform, v2.Compose) else [transform]
    return all(isinstance(step, BATCH_SAFE_STEPS) for step in steps)


def build_transform(train: bool, image_size: int, kind: str, *, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    interpolation: str = "bicubic") -> v2.Compose:
    """The training (``train=True``) or evaluation transform of a dataset kind (see module docstring);
    ``interpolation`` ('bilinear' | 'bicubic') is that of the training RandomResizedCrop."""
    if image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    bicubic = InterpolationMode.BICUBIC
    if kind == "imagenet":
        if train:
            spatial = [v2.RandomResizedCrop(image_size, interpolation=INTERPOLATIONS[interpolation], antialias=True),
                       v2.RandomHorizontalFlip()]
        else:
            spatial = [v2.Resize(int(256 / 224 * image_size), interpolation=bicubic, antialias=True),
                       v2.CenterCrop(image_size)]
    elif kind == "small":
        spatial = [v2.Resize(image_size, antialias=True)]
        if train:
            spatial.append(RandomCropFlip(image_size, padding=image_size // 8))
    else:
        raise ValueError(f"unknown transform kind {kind!r}; use one of {', '.join(TRANSFORM_KINDS)}")
    return v2.Compose([*spatial, NormalizeRGB(mean, std)])
