"""Image datasets with integer labels, held as a uint8 tensor or as a list of image files.

Every dataset this package returns is an :class:`ImageDataset`: ``dataset[i]`` is
``(transform(image), label)`` where ``image`` is a uint8 tensor ``C x H x W`` (C = 1 for
grayscale arrays, 3 otherwise) and ``label`` an ``int``. Class selection and per-class
subsampling make a new dataset that shares the stored images with the original.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from data.splits import select_indices
from data.transforms import batch_safe


class DatasetError(ValueError):
    """A dataset's files are missing or malformed; the message names the path and what belongs there."""


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
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])

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
        if self.transform is not None and not batch_safe(self.transform):
            return [self[i] for i in indices]
        indices = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[self._rows[indices]]
        if self.transform is not None:
            images = self.transform(images)
        return list(zip(images.unbind(0), self.targets[indices].tolist()))


class FileImageDataset(ImageDataset):
    """Images read from files on each access (any format PIL reads); grayscale becomes RGB."""

    def __init__(self, name: str, paths: Sequence[str | Path], targets, classes: Sequence[str]):
        super().__init__(name, classes, targets)
        if len(paths) != len(self.targets):
            raise ValueError(f"{name}: {len(paths)} image files but {len(self.targets)} labels")
        self.paths = [str(p) for p in paths]

    def load(self, row: int) -> torch.Tensor:
        path = self.paths[row]
        try:
            with Image.open(path) as image:
                pixels = np.array(image.convert("RGB"))
        except FileNotFoundError:
            raise DatasetError(f"{self.name}: image {path} is missing; restore it or rebuild the dataset folder") from None
        except (UnidentifiedImageError, OSError) as error:
            raise DatasetError(f"{self.name}: {path} is not a readable image ({error}); replace or remove it") from None
        return torch.from_numpy(pixels).permute(2, 0, 1)
