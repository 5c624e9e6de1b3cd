"""The datasets OpenOOD v1.5's benchmarks read, from folders the user provides (never downloaded).

``mnist``
    MNIST digits: the four IDX files (``train-images-idx3-ubyte[.gz]``, ...) in ``root`` or in
    torchvision's ``root/MNIST/raw/``. train 60,000 / test 10,000; 28 x 28 gray, transform kind ``small``.
``tiny_imagenet``
    ``tiny-imagenet-200/`` as published (or that folder itself): ``wnids.txt``,
    ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` with ``val/val_annotations.txt``.
    train 100,000 / val = test 10,000 (the published test images carry no labels); 200 classes.
``places365``
    the validation images, split ``val`` = ``test``: OpenOOD's ``places365/<category>/*.jpg``
    (its 35,195-image selection), or Places365-Standard's ``categories_places365.txt``,
    ``places365_val.txt`` and ``val_256/`` (or ``val_large/``), all 36,500; 365 categories.

Places365 categories carry OpenOOD's folder names (``/f/field/cultivated`` is ``field-cultivated``);
with every category present both layouts number them alike (the official file's order, which is
the sorted order of these names). OpenOOD's image lists are the ``imglist`` dataset (:mod:`data.imglist`).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from data.dataset import DatasetError, FileImageDataset, TensorImageDataset
from data.files import class_folders, locate, malformed, read_idx_split, read_lines, require, scan_folder, with_sources
from data.registry import register

_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@functools.lru_cache(maxsize=2)
def _mnist_arrays(root: Path, split: str):
    images, labels, files = read_idx_split("mnist", root, "MNIST/raw", _MNIST_FILES[split], "the four MNIST IDX files")
    return torch.from_numpy(images.copy()[:, None]), torch.from_numpy(labels.astype("int64")), files


@register("mnist", kind="small", splits=("train", "test"))
def mnist(split, root=None, seed=0):
    """MNIST handwritten digits (LeCun et al. 1998): the four IDX files, gzipped or not, in ``root``
    or torchvision's ``root/MNIST/raw/``; label = digit."""
    if root is None:
        raise DatasetError("mnist: no root given; pass root=<folder holding the MNIST IDX files (or MNIST/raw/)>")
    images, labels, files = _mnist_arrays(Path(root), split)
    return with_sources(TensorImageDataset("mnist", images, labels, [str(d) for d in range(10)]), *files)


# ----------------------------------------------------------------------------- Tiny ImageNet

@register("tiny_imagenet", kind="imagenet", splits=("train", "val", "test"))
def tiny_imagenet(split, root=None, seed=0):
    """Tiny ImageNet (Le and Yang 2015), 200 classes of 64 x 64 images. Labels follow the sorted
    wnids (as an ImageFolder over ``train/`` numbers them); ``val`` and ``test`` are the 10,000
    labelled validation images named in ``val/val_annotations.txt``."""
    what = "the Tiny ImageNet folders (the extracted tiny-imagenet-200.zip: wnids.txt, train/, val/)"
    base = locate("tiny_imagenet", root, "tiny-imagenet-200", "wnids.txt", what)
    classes = sorted(read_lines(base / "wnids.txt"))
    if split == "train":
        paths, labels = scan_folder("tiny_imagenet", require("tiny_imagenet", base, "train", what), classes)
        return with_sources(FileImageDataset("tiny_imagenet", paths, labels, classes), base / "wnids.txt")
    annotations = require("tiny_imagenet", base, "val/val_annotations.txt", what)
    index = {wnid: i for i, wnid in enumerate(classes)}
    paths, labels = [], []
    for line in read_lines(annotations):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise malformed("tiny_imagenet", annotations, f"has the line {line!r}, not 'FILE<tab>WNID...' with a wnid "
                            "of wnids.txt", "the original file")
        paths.append(base / "val" / "images" / fields[0])
        labels.append(index[fields[1]])
    return with_sources(FileImageDataset("tiny_imagenet", paths, labels, classes), base / "wnids.txt", annotations)


# ----------------------------------------------------------------------------- Places365

def openood_category(official: str) -> str:
    """A Places365 category as OpenOOD's folders name it: ``/f/field/cultivated`` -> ``field-cultivated``."""
    return official.strip("/").split("/", 1)[-1].replace("/", "-")


def _places_official(base: Path, what: str) -> FileImageDataset:
    categories_file, list_file = base / "categories_places365.txt", require("places365", base, "places365_val.txt", what)
    names = {}
    for line in read_lines(categories_file):
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise malformed("places365", categories_file, f"has the line {line!r}, not 'CATEGORY INDEX'", "the original file")
        names[int(fields[1])] = openood_category(fields[0])
    if sorted(names) != list(range(len(names))):
        raise malformed("places365", categories_file, f"numbers its {len(names)} categories other than 0..{len(names) - 1}",
                        "the original file")
    images = next((base / d for d in ("val_256", "val_large") if (base / d).is_dir()), None)
    if images is None:
        raise DatasetError(f"places365: {base} has no val_256/ (or val_large/); put the Places365 validation images there")
    paths, labels = [], []
    for line in read_lines(list_file):
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) not in names:
            raise malformed("places365", list_file, f"has the line {line!r}, not 'IMAGE CATEGORY_INDEX'", "the original file")
        paths.append(images / fields[0].lstrip("/"))
        labels.append(int(fields[1]))
    dataset = FileImageDataset("places365", paths, labels, [names[i] for i in range(len(names))])
    return with_sources(dataset, categories_file, list_file)


@register("places365", kind="imagenet", splits=("val", "test"))
def places365(split, root=None, seed=0):
    """Places365 (Zhou et al. 2017) validation images, both splits. ``root`` holds OpenOOD's
    ``places365/`` folder of category folders (or is it), or Places365-Standard's validation files
    (torchvision's layout: categories_places365.txt, places365_val.txt, val_256/ or val_large/)."""
    if root is None:
        raise DatasetError("places365: no root given; pass root=<folder holding OpenOOD's places365/ category folders, "
                           "or categories_places365.txt, places365_val.txt and val_256/>")
    if (root / "categories_places365.txt").is_file():
        return _places_official(root, "the Places365-Standard validation file list (filelist_places365-standard.tar)")
    folder = root / "places365" if (root / "places365").is_dir() else root
    classes = class_folders("places365", folder)
    paths, labels = scan_folder("places365", folder, classes)
    return with_sources(FileImageDataset("places365", paths, labels, classes))
