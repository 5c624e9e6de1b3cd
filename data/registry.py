"""One registry of datasets: name -> builder, and :func:`build_dataset` on top of it.

A builder is ``builder(split, root, seed, **options) -> ImageDataset`` returning every sample of
the split, untransformed; ``seed`` matters only to builders that draw a split (``imagefolder``
with ``holdout``). The decorator :func:`register` records the builder's transform kind
(``imagenet`` or ``small``, see :mod:`data.transforms`) and its splits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from data.dataset import DatasetError, ImageDataset
from data.transforms import IMAGENET_MEAN, IMAGENET_STD, TRANSFORM_KINDS, build_transform

DATASETS: dict[str, Callable[..., ImageDataset]] = {}


#: Normalization statistics a spec can ask for with ``stats=``.
STATS = ("imagenet", "own")


def register(name: str, *, kind: str, splits: Sequence[str], stats: tuple | None = None):
    """Decorator adding a builder to :data:`DATASETS` under ``name``; ``stats`` = (mean, std) per
    channel of the dataset's own images, for the datasets that have published ones."""
    if kind not in TRANSFORM_KINDS:
        raise ValueError(f"dataset {name!r}: unknown transform kind {kind!r}; use one of {', '.join(TRANSFORM_KINDS)}")

    def decorator(builder):
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        builder.kind = kind
        builder.splits = tuple(splits)
        builder.stats = stats
        DATASETS[name] = builder
        return builder

    return decorator


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(DATASETS)


def build_dataset(name: str, split: str, *, root: str | Path | None = None, image_size: int = 32,
                  augment: bool = False, classes: Sequence[int] | None = None,
                  max_per_class: int | None = None, seed: int = 0, transform: str | None = None,
                  stats: str = "imagenet", interpolation: str = "bicubic", **options) -> ImageDataset:
    """Build dataset ``name`` for ``split`` ('train', 'test', or a dataset's own extra splits).

    Returns an :class:`ImageDataset` whose items are (float32 3 x image_size x image_size
    normalized with the ImageNet mean/std unless ``stats="own"``, int label). ``augment`` picks the
    training transform, otherwise the deterministic evaluation transform. ``classes`` keeps those original class
    indices, relabelled 0..k-1 in the given order; ``max_per_class`` keeps at most that many
    samples per class, drawn by ``seed``. ``transform`` overrides the dataset's transform kind
    (e.g. ``small`` for CIFAR at its native 32 px, as DDU trains it). ``stats='own'`` normalizes with
    the dataset's own channel statistics instead of ImageNet's (the official CNN evaluation does so
    for CIFAR-10/100). ``interpolation`` is that of the training RandomResizedCrop ('bilinear' or
    'bicubic'). ``options`` go to the builder (e.g. ``holdout`` for ``imagefolder``, ``partition`` for ``dtd``).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    builder = DATASETS[name]
    if split not in builder.splits:
        raise DatasetError(f"{name}: unknown split {split!r}; use one of {', '.join(builder.splits)}")
    if stats not in STATS:
        raise DatasetError(f"{name}: unknown stats={stats!r}; use imagenet (the default) or own")
    if stats == "own" and builder.stats is None:
        with_stats = ", ".join(n for n in list_datasets() if DATASETS[n].stats is not None)
        raise DatasetError(f"{name}: no statistics of its own are recorded (stats=own is known for {with_stats}); "
                           f"drop stats=own")
    mean, std = builder.stats if stats == "own" else (IMAGENET_MEAN, IMAGENET_STD)
    dataset = builder(split, root=None if root is None else Path(root).expanduser(), seed=seed, **options)
    if not hasattr(dataset, "source_files"):
        dataset.source_files = []  # built in memory (see data/__init__.py)
    if len(dataset) == 0:
        raise DatasetError(f"{name}: the {split} split at {root} holds no images; check the path")
    dataset = dataset.select(classes, max_per_class, seed)
    dataset.split = split
    dataset.kind = transform or builder.kind
    dataset.transform = build_transform(augment, image_size, dataset.kind, mean=mean, std=std,
                                        interpolation=interpolation)
    return dataset
