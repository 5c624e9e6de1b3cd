"""Image transforms, applied to uint8 tensors C x H x W (torchvision.transforms.v2).

Two kinds, each dataset declares one:

- ``imagenet`` (natural images): train = RandomResizedCrop(size, ``interpolation``) +
  RandomHorizontalFlip (as :class:`RandomResizedCropFlip`); eval = Resize(int(256/224 * size),
  bicubic) + CenterCrop(size), the evaluation transform of the official NC-OOD code (CNNs and ViTs alike). The crop's
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

Random draws: called plainly, the random steps draw from torch's global generator, as torchvision's
do (each DataLoader worker has its own, so the draws depend on the worker count). Given one key per
sample (:func:`apply_transform`, used by :class:`data.dataset.EpochSamples` during training), every
draw of a sample is a function of its key alone (:func:`keyed_uniforms`), whichever process makes it.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.functional import pil_modes_mapping

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRANSFORM_KINDS = ("imagenet", "small")
INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}

_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment (the golden ratio in 64 bits)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S11, _S27, _S30, _S31 = (np.uint64(s) for s in (11, 27, 30, 31))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function (Steele, Lea & Flood, OOPSLA 2014) on a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def _as_keys(keys) -> np.ndarray:
    return np.atleast_1d(np.asarray(keys, dtype=np.uint64))


@functools.lru_cache(maxsize=8)
def _counters(count: int) -> np.ndarray:
    return (np.arange(1, count + 1, dtype=np.uint64) * _GAMMA)[None, :]


def sample_keys(epoch_key: int, positions: Sequence[int]) -> np.ndarray:
    """One uint64 key per sample: splitmix64's output number ``position`` from the seed ``epoch_key``
    (a function of (seed, epoch, rank)), so neighbouring positions get unrelated keys."""
    seed = _mix64(np.array([int(epoch_key) % 2**64], dtype=np.uint64))
    return _mix64(seed + (np.asarray(positions, dtype=np.uint64) + np.uint64(1)) * _GAMMA)


def keyed_uniforms(keys, count: int) -> np.ndarray:
    """float64 array len(keys) x ``count`` of uniform draws in [0, 1): row i is the splitmix64 stream
    seeded by ``keys[i]`` (53 bits per draw), a function of that key alone."""
    bits = _mix64(_as_keys(keys)[:, None] + _counters(count))
    return (bits >> _S11).astype(np.float64) * 2.0**-53


class NormalizeRGB:
    """uint8 image (1 or 3 channels) -> float32 3 x H x W, x' = (x / 255 - mean_c) / std_c;
    a batch B x C x H x W -> B x 3 x H x W.

    One fused step in place of ToDtype + RGB + Normalize, which matters for the 28-px data
    where the per-call overhead dominates. On a GPU batch (training normalizes there, see
    :class:`data.dataset.DeviceBatches`) the statistics are copied to the device once.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        cpu = (torch.tensor(self.mean).view(3, 1, 1), torch.tensor(self.std).view(3, 1, 1))
        self._stats = {torch.device("cpu"): cpu}

    def __getstate__(self) -> dict:  # a copy for another process carries the CPU statistics only
        return {"mean": self.mean, "std": self.std}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["mean"], state["std"])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.dim() not in (3, 4) or image.shape[-3] not in (1, 3):
            raise ValueError(f"NormalizeRGB expects a uint8 image (or batch) with 1 or 3 channels, "
                             f"got {image.dtype} {tuple(image.shape)}")
        scaled = image.contiguous().to(torch.float32).div_(255.0)
        if image.device not in self._stats:
            self._stats[image.device] = tuple(t.to(image.device) for t in self._stats[torch.device("cpu")])
        mean, std = self._stats[image.device]
        if image.shape[-3] == 3:  # in place: the same operations as below, without a new tensor
            return scaled.sub_(mean).div_(std)
        return (scaled.expand(*image.shape[:-3], 3, -1, -1) - mean).div_(std)

    def __repr__(self) -> str:
        return f"NormalizeRGB(mean={self.mean}, std={self.std})"


class RandomCropFlip:
    """RandomCrop(size, padding) (zero padding) then RandomHorizontalFlip(p), with parameters
    drawn per sample: on a batch B x C x H x W each sample gets its own crop offsets and flip.

    The draws are the ones torchvision's ``v2.RandomCrop(size, padding=padding)`` followed by
    ``v2.RandomHorizontalFlip(p)`` make for one image (offset top, offset left, then the flip
    coin, from torch's global generator), taken for each sample of the batch in turn; so the
    output equals those two transforms applied sample by sample, exactly. The crop and the flip
    are then one gather over the zero-padded batch. With ``keys`` (one per sample) the draws come
    from :func:`keyed_uniforms` instead, for the whole batch at once: top and left uniform over their
    ranges, the flip with probability ``p``, as torchvision draws them.
    """

    def __init__(self, size: int, padding: int, p: float = 0.5):
        self.size, self.padding, self.p = int(size), int(padding), float(p)

    def draw(self, height: int, width: int) -> tuple[int, int, bool]:
        """(top, left, flip) for one padded image of ``height`` x ``width``, as v2 draws them."""
        top = int(torch.randint(0, height - self.size + 1, size=())) if height > self.size else 0
        left = int(torch.randint(0, width - self.size + 1, size=())) if width > self.size else 0
        return top, left, bool(torch.rand(1) < self.p)

    def draws(self, count: int, height: int, width: int, keys=None) -> torch.Tensor:
        """(top, left, flip) of ``count`` padded images, count x 3: torchvision's draws from the
        global generator in turn, or with ``keys`` the keyed draws of every sample at once."""
        if keys is None:
            return torch.tensor([self.draw(height, width) for _ in range(count)], dtype=torch.long)
        keys = _as_keys(keys)
        if len(keys) != count:
            raise ValueError(f"RandomCropFlip: {len(keys)} keys for {count} images")
        u = keyed_uniforms(keys, 3)
        top, left = np.floor(u[:, 0] * (height - self.size + 1)), np.floor(u[:, 1] * (width - self.size + 1))
        return torch.from_numpy(np.stack([top, left, u[:, 2] < self.p], axis=1).astype(np.int64))

    def __call__(self, images: torch.Tensor, keys=None) -> torch.Tensor:
        single = images.dim() == 3
        batch = images[None] if single else images
        if self.padding:
            batch = v2.functional.pad(batch, [self.padding], fill=0)
        height, width = batch.shape[-2:]
        if height < self.size or width < self.size:
            raise ValueError(f"RandomCropFlip: crop size {self.size} is larger than the padded image {height} x {width}")
        draws = self.draws(batch.shape[0], height, width, keys)
        offsets = torch.arange(self.size)
        rows = draws[:, 0, None] + offsets  # B x size
        cols = draws[:, 1, None] + torch.where(draws[:, 2, None].bool(), offsets.flip(0), offsets)
        samples = torch.arange(batch.shape[0])[:, None, None, None]
        channels = torch.arange(batch.shape[1])[None, :, None, None]
        out = batch[samples, channels, rows[:, None, :, None], cols[:, None, None, :]]
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"RandomCropFlip(size={self.size}, padding={self.padding}, p={self.p})"


class CropBox(NamedTuple):
    """A resized crop's region of the image (rows top..top+height, columns left..left+width) and its flip."""
    top: int
    left: int
    height: int
    width: int
    flip: bool


class RandomResizedCropFlip(v2.RandomResizedCrop):
    """``v2.RandomResizedCrop(size, scale, ratio, interpolation, antialias=True)`` then
    ``v2.RandomHorizontalFlip(p)`` on one uint8 image, in two parts: :meth:`draw` (the crop box and
    the flip, from the image size alone) and :meth:`crop` (cut, resize, flip), so that a decoder can
    draw first and decode only at the scale the crop needs (:mod:`data.decode`).

    Without a key the draws are torchvision's own, from torch's global generator (its
    ``make_params``, then the flip coin), so the output equals those two torchvision transforms
    exactly. With a key: 10 attempts of area fraction ~ U(scale), log aspect ratio ~ U(log ratio),
    the first that fits the image kept, offsets uniform over the positions, else the central crop of
    the closest ratio; torchvision's algorithm, with draws from :func:`keyed_uniforms`.
    """

    ATTEMPTS = 10

    def __init__(self, size: int, interpolation=InterpolationMode.BILINEAR, p: float = 0.5,
                 scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
        super().__init__(size, scale=scale, ratio=ratio, interpolation=interpolation, antialias=True)
        self.p = float(p)

    def draw(self, height: int, width: int, keys=None) -> CropBox:
        """The crop box and flip for an image of ``height`` x ``width`` (``keys``: one key, or None)."""
        if keys is None:
            stand_in = torch.empty(1, 1, 1, dtype=torch.uint8).expand(1, height, width)  # the size, no pixels
            box = self.make_params([stand_in])
            return CropBox(box["top"], box["left"], box["height"], box["width"], bool(torch.rand(1) < self.p))
        n = self.ATTEMPTS
        u = keyed_uniforms(_as_keys(keys)[:1], 2 * n + 3)[0].tolist()
        (low, high), (log_low, log_high) = self.scale, (math.log(r) for r in self.ratio)
        for area_draw, ratio_draw in zip(u[:n], u[n:2 * n]):
            area = height * width * (low + (high - low) * area_draw)
            aspect = math.exp(log_low + (log_high - log_low) * ratio_draw)
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top, left = int(u[2 * n] * (height - h + 1)), int(u[2 * n + 1] * (width - w + 1))
                break
        else:
            h, w = self._central(height, width)
            top, left = (height - h) // 2, (width - w) // 2
        return CropBox(top, left, h, w, u[2 * n + 2] < self.p)

    def _central(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the fallback crop: the whole image, cut to the nearest allowed aspect ratio."""
        low, high = min(self.ratio), max(self.ratio)
        if width / height < low:
            return int(round(width / low)), width
        if width / height > high:
            return height, int(round(height * high))
        return height, width

    def crop(self, image: torch.Tensor, box: CropBox, reduced: int = 1) -> torch.Tensor:
        """Cut ``box`` out of ``image`` (uint8 C x H x W), resize it to ``size``, flip it if drawn.

        ``reduced`` = s > 1: ``image`` is the drawn-on image decoded at 1/s (pixel i covering the
        original's s i .. s (i + 1)), and the box, at its fractional place there, is resized by PIL's
        resize with a box (the same antialiased filter as torch's), so the crop is the one drawn."""
        if reduced == 1:
            out = v2.functional.resized_crop(image, box.top, box.left, box.height, box.width, size=self.size,
                                             interpolation=self.interpolation, antialias=self.antialias)
        else:
            region = tuple(v / reduced for v in (box.left, box.top, box.left + box.width, box.top + box.height))
            resized = Image.fromarray(image.permute(1, 2, 0).numpy()).resize(
                self.size[::-1], pil_modes_mapping[self.interpolation], box=region)
            out = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)
        return (v2.functional.horizontal_flip(out) if box.flip else out).contiguous()

    def forward(self, image: torch.Tensor, keys=None) -> torch.Tensor:
        if image.dim() != 3:
            raise ValueError(f"RandomResizedCropFlip takes one image C x H x W, got {tuple(image.shape)}")
        return self.crop(image, self.draw(image.shape[-2], image.shape[-1], keys))


BATCH_SAFE_STEPS = (v2.Resize, v2.CenterCrop, NormalizeRGB, RandomCropFlip)
KEYED_STEPS = (RandomCropFlip, RandomResizedCropFlip)
DETERMINISTIC_STEPS = (v2.Resize, v2.CenterCrop, NormalizeRGB)


def transform_steps(transform) -> list:
    """The steps of a transform: those of a ``v2.Compose``, else the transform itself (none for None)."""
    if transform is None:
        return []
    return list(transform.transforms) if isinstance(transform, v2.Compose) else [transform]


def apply_transform(transform, images: torch.Tensor, keys=None) -> torch.Tensor:
    """``transform(images)``; with ``keys`` (one per sample of ``images``: an image or a batch) every
    random draw is a function of the sample's key: :data:`KEYED_STEPS` draw from the keys, and any
    other step not known to be deterministic runs with torch's global generator seeded by the key
    (and restored after), one sample at a time."""
    if keys is None:
        return transform(images) if transform is not None else images
    keys = _as_keys(keys)
    for step in transform_steps(transform):
        if isinstance(step, KEYED_STEPS):
            images = step(images, keys=keys)
        elif isinstance(step, DETERMINISTIC_STEPS):
            images = step(images)
        else:
            images = _seeded(step, images, keys)
    return images


def _seeded(step, images: torch.Tensor, keys: np.ndarray) -> torch.Tensor:
    if len(keys) > 1:
        return torch.stack([_seeded(step, image, keys[i:i + 1]) for i, image in enumerate(images)])
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(keys[0] >> np.uint64(1)))
        return step(images)


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
            spatial = [RandomResizedCropFlip(image_size, interpolation=INTERPOLATIONS[interpolation])]
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
