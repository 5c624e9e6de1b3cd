"""Image datasets with integer labels, held as a uint8 tensor or as a list of image files.

Every dataset this package returns is an :class:`ImageDataset`: ``dataset[i]`` is
``(transform(image), label)`` where ``image`` is a uint8 tensor ``C x H x W`` (C = 1 for
grayscale arrays, 3 otherwise) and ``label`` an ``int``. Class selection and per-class
subsampling make a new dataset that shares the stored images with the original.

``dataset.sample(i, key)`` is the same item with the transform's random draws taken from ``key``
(:func:`data.transforms.apply_transform`); training reads its epochs through :class:`EpochSamples`,
whose keys come from (seed, epoch, rank, position in the epoch), so the number of loader workers
cannot change a result.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, Subset
from torchvision.transforms import v2

from data.decode import DatasetError, check_size, dct_scale, decode_jpeg, jpeg_size, read_bytes, read_image
from data.splits import select_indices
from data.transforms import (
    NormalizeRGB,
    RandomResizedCropFlip,
    apply_transform,
    batch_safe,
    sample_keys,
    transform_steps,
)

__all__ = ["DatasetError", "DeviceBatches", "EpochSamples", "FileImageDataset", "ImageDataset", "PositionSampler",
           "TensorImageDataset", "use_fast_decode"]


class ImageDataset(Dataset):
    """Labelled images; subclasses say how to read the stored image at a storage position.

    Attributes: ``name``, ``classes`` (class names, index = label), ``targets`` (1-D LongTensor),
    ``num_classes``, ``transform`` (applied in ``__getitem__``; None returns the raw uint8 image),
    ``split`` and ``kind`` (transform kind), which :func:`data.build_dataset` sets, and
    ``test_is_train`` (True when this test split holds the training split's images).
    """

    def __init__(self, name: str, classes: Sequence[str], targets, transform: Callable | None = None):
        self.name = name
        self.classes = [str(c) for c in classes]
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
        self.transform = transform
        self.split: str | None = None
        self.kind: str | None = None
        self.test_is_train = False
        self._rows = torch.arange(len(self.targets))  # storage position of each sample

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.sample(index)

    def sample(self, index: int, key: int | None = None) -> tuple:
        """``(transform(image), label)`` of sample ``index``; with ``key``, every random draw of the
        transform is a function of the key (None: torch's global generator, as ``dataset[index]``)."""
        image = apply_transform(self.transform, self.image(index), None if key is None else [key])
        return image, int(self.targets[index])

    def samples(self, indices: Sequence[int], keys: Sequence[int] | None = None) -> list:
        """:meth:`sample` of each index with its key (None: the global generator), as a list."""
        keys = [None] * len(indices) if keys is None else keys
        return [self.sample(int(i), k) for i, k in zip(indices, keys)]

    def image(self, index: int) -> torch.Tensor:
        """Sample ``index`` before the transform: a uint8 tensor C x H x W."""
        return self.load(int(self._rows[index]))

    def load(self, row: int) -> torch.Tensor:
        """The stored image at storage position ``row`` as a uint8 tensor C x H x W."""
        raise NotImplementedError

    def select(self, classes: Sequence[int] | None = None, max_per_class: int | None = None,
               seed: int = 0) -> "ImageDataset":
        """Keep the listed original classes (relabelled 0..k-1 in the given order) and at most
        ``max_per_class`` samples of each, drawn by ``seed``; returns a new dataset sharing storage."""
        if classes is None and max_per_class is None:
            return self
        try:
            indices, labels = select_indices(self.targets, self.num_classes, classes, max_per_class, seed)
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}") from None
        subset = copy.copy(self)
        subset._rows = self._rows[indices]
        subset.targets = labels
        if classes is not None:
            subset.classes = [self.classes[c] for c in classes]
        return subset

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, samples={len(self)}, "
                f"classes={self.num_classes}, transform={self.transform!r})")


class TensorImageDataset(ImageDataset):
    """Images stored in memory as one uint8 tensor ``N x C x H x W`` (shared, never modified).

    A DataLoader fetches a batch through :meth:`__getitems__`: one gather of the stored images
    and, when the transform is :func:`data.transforms.batch_safe`, one call of it on the whole
    batch, whose result equals the per-sample path exactly (random draws included).
    """

    def __init__(self, name: str, images: torch.Tensor, targets, classes: Sequence[str]):
        super().__init__(name, classes, targets)
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(self.targets):
            raise ValueError(f"{name}: images must be uint8 N x C x H x W with one label each, "
                             f"got {tuple(images.shape)} {images.dtype} for {len(self.targets)} labels")
        self.images = images

    def load(self, row: int) -> torch.Tensor:
        return self.images[row]

    def __getitems__(self, indices: Sequence[int]) -> list:
        return self.samples(indices)

    def samples(self, indices: Sequence[int], keys: Sequence[int] | None = None) -> list:
        if self.transform is not None and not batch_safe(self.transform):
            return super().samples(indices, keys)
        indices = torch.as_tensor(indices, dtype=torch.long)
        images = apply_transform(self.transform, self.images[self._rows[indices]], keys)
        return list(zip(images.unbind(0), self.targets[indices].tolist()))


class FileImageDataset(ImageDataset):
    """Images read from files on each access (any format PIL reads, see :func:`data.decode.read_image`);
    grayscale becomes RGB.

    ``fast_decode`` (default True) applies when the transform starts with a
    :class:`~data.transforms.RandomResizedCropFlip` (the ``imagenet`` training transform): the crop is
    drawn from the JPEG header's size, the JPEG decoded by libjpeg-turbo (:mod:`data.decode`) at the
    smallest of 1, 1/2, 1/4, 1/8 scale at which the crop still covers the output size, and the crop
    taken from it. At full scale the pixels are PIL's; at a reduced scale the downscale by 2, 4 or 8
    happens in the DCT domain (the pixels of PIL's ``draft`` mode) instead of in the resize, and the
    drawn box is cut at its fractional place. Other files and other transforms are
    decoded by PIL; ``fast_decode=False`` decodes every image with PIL (the official decode).
    """

    fast_decode = True

    def __init__(self, name: str, paths: Sequence[str | Path], targets, classes: Sequence[str]):
        super().__init__(name, classes, targets)
        if len(paths) != len(self.targets):
            raise ValueError(f"{name}: {len(paths)} image files but {len(self.targets)} labels")
        self.paths = [str(p) for p in paths]

    def load(self, row: int) -> torch.Tensor:
        return read_image(self.paths[row], self.name)

    def sample(self, index: int, key: int | None = None) -> tuple:
        steps = transform_steps(self.transform)
        if not (self.fast_decode and steps and isinstance(steps[0], RandomResizedCropFlip)):
            return super().sample(index, key)
        keys = None if key is None else [key]
        image = self.decode_crop(int(self._rows[index]), steps[0], keys)
        for step in steps[1:]:
            image = apply_transform(step, image, keys)
        return image, int(self.targets[index])

    def decode_crop(self, row: int, crop: RandomResizedCropFlip, keys) -> torch.Tensor:
        """The resized crop of the image at ``row``, drawn from its size and decoded at the scale it needs."""
        path = self.paths[row]
        data = read_bytes(path, self.name)
        size = jpeg_size(data)
        if size is None:  # not a JPEG libjpeg-turbo decodes to RGB (PNG, CMYK, ...): PIL
            return crop(read_image(path, self.name), keys=keys)
        check_size(*size, path, self.name)
        box = crop.draw(*size, keys)
        scale = dct_scale(box.height, box.width, crop.size)
        image = decode_jpeg(data, *size, scale=scale)
        if image is None:  # libjpeg-turbo reported a problem: PIL reads it (or names it)
            image, scale = read_image(path, self.name), 1
        return crop.crop(image, box, reduced=scale)


def use_fast_decode(dataset, fast: bool) -> None:
    """Set ``fast_decode`` of the file dataset under ``dataset`` (itself or inside Subsets); others have none."""
    base = unwrap(dataset)[0]
    if isinstance(base, FileImageDataset):
        base.fast_decode = bool(fast)


def unwrap(dataset) -> tuple[Dataset, list[int] | None]:
    """(the dataset under any ``Subset`` wrappers, the row of it each index of ``dataset`` reads; None = the same)."""
    rows = None
    while isinstance(dataset, Subset):
        indices = [int(i) for i in dataset.indices]
        rows = indices if rows is None else [indices[r] for r in rows]
        dataset = dataset.dataset
    return dataset, rows


class PositionSampler(Sampler):
    """``sampler``'s indices as (position in the epoch, index) pairs, for :class:`EpochSamples`."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return enumerate(self.sampler)


class EpochSamples(Dataset):
    """One training epoch of ``dataset`` (an :class:`ImageDataset` or a ``Subset`` of one), read by
    (position, index) pairs from a :class:`PositionSampler`: the sample at position p of the epoch is
    transformed with the key ``sample_keys(epoch_key, p)`` (``epoch_key`` from (seed, epoch, rank)),
    so its crop and flip are the same in any worker and for any number of workers. The position,
    not the image, carries the key: an image drawn twice in an epoch (repeated augmentation) gets
    two different augmentations. Batches stay batched (:meth:`ImageDataset.samples`).

    ``uint8=True``: a transform ending in :class:`~data.transforms.NormalizeRGB` stops before it, the
    items stay uint8 and ``normalize`` holds that step, for :class:`DeviceBatches` to apply to whole
    batches on the device (``normalize`` is None otherwise).
    """

    def __init__(self, dataset, epoch_key: int, uint8: bool = False):
        self.dataset, self.epoch_key = dataset, int(epoch_key)
        self.base, self.rows = unwrap(dataset)
        if not isinstance(self.base, ImageDataset):
            raise TypeError(f"EpochSamples reads an ImageDataset (or a Subset of one), got {type(self.base).__name__}")
        steps, self.normalize = transform_steps(self.base.transform), None
        if uint8 and steps and isinstance(steps[-1], NormalizeRGB):
            self.base, self.normalize = copy.copy(self.base), steps[-1]
            self.base.transform = v2.Compose(steps[:-1])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: Sequence[tuple[int, int]]) -> list:
        positions = [int(p) for p, _ in items]
        indices = [int(i) if self.rows is None else self.rows[int(i)] for _, i in items]
        return self.base.samples(indices, sample_keys(self.epoch_key, positions))


class DeviceBatches:
    """The batches of ``loader`` (uint8 images, labels; from :class:`EpochSamples` with ``uint8=True``)
    with the images moved to ``device`` and normalized there by ``normalize``: a quarter of the bytes
    through the workers, shared memory and the host-to-device copy, and no normalization in the
    workers. The values equal those of normalizing in the workers (the same float32 operations)."""

    def __init__(self, loader, normalize, device: torch.device):
        self.loader, self.normalize, self.device = loader, normalize, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets in self.loader:
            yield self.normalize(images.to(self.device, non_blocking=True)), targets
