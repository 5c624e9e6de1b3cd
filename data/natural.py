"""Natural-image datasets read from a folder the user provides (never downloaded); transform kind ``imagenet``.

Each builder checks the files it needs first and raises :class:`~data.dataset.DatasetError`
with one line naming the path and what belongs there. ``root`` is the folder holding the
dataset's standard extracted folder (torchvision's layout) or that folder itself.

==============  ===========================================  =====================================================
name            expected under ``root``                      splits
==============  ===========================================  =====================================================
``cifar10``     ``cifar-10-batches-py/`` (python version)    train 50,000 / test 10,000
``cifar100``    ``cifar-100-python/`` (fine labels)          train 50,000 / test 10,000
``svhn``        ``train_32x32.mat`` ``test_32x32.mat``       train 73,257 / test 26,032 / extra 531,131
``stl10``       ``stl10_binary/`` (binary version)           train 5,000 / test 8,000 (unlabelled part unused)
``flowers102``  ``flowers-102/`` jpg/ imagelabels.mat        train 1,020 / val 1,020 / test 6,149 (the official
                setid.mat                                    NC-OOD code probes on train and evaluates on val)
``pets``        ``oxford-iiit-pet/`` images/ annotations/    train = trainval 3,680 / test 3,669
``aircraft``    ``fgvc-aircraft-2013b/data/``                train = trainval 6,667 / val 3,333 / test 3,333
                                                             (100 variants)
``dtd``         ``dtd/`` images/ labels/ (or torchvision's   train / val / test 1,880 each, ``partition`` 1..10
                ``dtd/dtd/``)                                (default 1)
``imagenet100`` ``train/`` ``val/`` class folders (wnids)    train / test = val; the 100 classes of CMC
                                                             (Tian et al. 2019), ``data/imagenet100_classes.txt``
``imagefolder`` class folders, in ``<split>/`` or directly   train / test (``test`` falls back to ``val/``);
                                                             ``holdout=f`` splits one folder, stratified, seeded
==============  ===========================================  =====================================================

CIFAR, SVHN and STL-10 are decoded into memory once per process (files changed while the
process runs are not read again); the others read image files on access. CIFAR's python
version is a pickle: open only files from a source you trust.

The readers are written here rather than taken from torchvision: torchvision checks the MD5
sums of the CIFAR, SVHN, STL-10 and Flowers-102 files (so it can neither read small test copies
nor say which file is wrong) and keeps the labels of the other datasets in private attributes.
"""
from __future__ import annotations

import functools
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import Flowers102

from data.dataset import DatasetError, FileImageDataset, TensorImageDataset
from data.files import class_folders, locate, malformed, read_lines, read_mat, require, scan_folder, with_sources
from data.registry import register

IMAGENET100_CLASSES_FILE = Path(__file__).with_name("imagenet100_classes.txt")


# ----------------------------------------------------------------------------- CIFAR

def _unpickle(path: Path, name: str, what: str) -> dict:
    """A CIFAR python-version pickle as a dict with str keys (the files were written by Python 2)."""
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise malformed(name, path, f"is not a CIFAR python batch ({type(error).__name__}: {error})", what) from None
    if not isinstance(content, dict):
        raise malformed(name, path, "is not a CIFAR python batch (not a dict)", what)
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _cifar_batch(path: Path, name: str, label_key: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path, name, what)
    if "data" not in batch or label_key not in batch:
        raise malformed(name, path, f"lacks the keys 'data' and '{label_key}'", what)
    data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise malformed(name, path, f"holds data {data.dtype} {data.shape} and {labels.shape} labels, "
                         "not uint8 N x 3072 with N labels", what)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _cifar_arrays(name: str, base: Path, files: tuple[str, ...], label_key: str, meta: str, names_key: str, what: str):
    parts = [_cifar_batch(require(name, base, f, what), name, label_key, what) for f in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    meta_path = require(name, base, meta, what)
    class_names = _unpickle(meta_path, name, what).get(names_key)
    if class_names is None:
        raise malformed(name, meta_path, f"lacks the key '{names_key}'", what)
    class_names = [c.decode() if isinstance(c, bytes) else str(c) for c in class_names]
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(class_names):
        raise malformed(name, base / files[0], f"has labels outside 0..{len(class_names) - 1}", what)
    return images, labels, class_names


# Channel statistics of the CIFAR training sets, as the official NC-OOD evaluation normalizes them (stats=own).
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615))
CIFAR100_STATS = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))


@register("cifar10", kind="imagenet", splits=("train", "test"), stats=CIFAR10_STATS)
def cifar10(split, root=None, seed=0):
    """CIFAR-10 (Krizhevsky 2009), python version."""
    what = "the CIFAR-10 python version (the extracted cifar-10-python.tar.gz)"
    base = locate("cifar10", root, "cifar-10-batches-py", "data_batch_1", what)
    files = tuple(f"data_batch_{i}" for i in range(1, 6)) if split == "train" else ("test_batch",)
    images, labels, names = _cifar_arrays("cifar10", base, files, "labels", "batches.meta", "label_names", what)
    return with_sources(TensorImageDataset("cifar10", images, labels, names), *(base / f for f in (*files, "batches.meta")))


@register("cifar100", kind="imagenet", splits=("train", "test"), stats=CIFAR100_STATS)
def cifar100(split, root=None, seed=0):
    """CIFAR-100 (Krizhevsky 2009), python version, 100 fine labels."""
    what = "the CIFAR-100 python version (the extracted cifar-100-python.tar.gz)"
    base = locate("cifar100", root, "cifar-100-python", "train", what)
    images, labels, names = _cifar_arrays("cifar100", base, (split,), "fine_labels", "meta", "fine_label_names", what)
    return with_sources(TensorImageDataset("cifar100", images, labels, names), base / split, base / "meta")


# ----------------------------------------------------------------------------- SVHN, STL-10

@functools.lru_cache(maxsize=2)
def _svhn_arrays(path: Path):
    what = "the SVHN cropped-digits file of the same name"
    images, labels = read_mat("svhn", path, ("X", "y"), what)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if images.dtype != np.uint8 or images.shape[:3] != (32, 32, 3) or images.shape[3] != len(labels):
        raise malformed("svhn", path, f"holds X {images.dtype} {images.shape}, not uint8 32 x 32 x 3 x N", what)
    labels[labels == 10] = 0  # SVHN labels the digit 0 as 10
    return torch.from_numpy(np.ascontiguousarray(images.transpose(3, 2, 0, 1))), torch.from_numpy(labels)


@register("svhn", kind="imagenet", splits=("train", "test", "extra"))
def svhn(split, root=None, seed=0):
    """SVHN cropped digits (Netzer et al. 2011), format 2 .mat files; label = digit."""
    what = "the SVHN cropped digits .mat files (train_32x32.mat, test_32x32.mat)"
    base = locate("svhn", root, "svhn", f"{split}_32x32.mat", what)
    images, labels = _svhn_arrays(base / f"{split}_32x32.mat")
    return with_sources(TensorImageDataset("svhn", images, labels, [str(d) for d in range(10)]), base / f"{split}_32x32.mat")


@functools.lru_cache(maxsize=2)
def _stl10_arrays(base: Path, split: str):
    what = "the STL-10 binary version (the extracted stl10_binary.tar.gz)"
    image_path = require("stl10", base, f"{split}_X.bin", what)
    label_path = require("stl10", base, f"{split}_y.bin", what)
    raw, labels = np.fromfile(image_path, dtype=np.uint8), np.fromfile(label_path, dtype=np.uint8).astype(np.int64)
    if raw.size != len(labels) * 3 * 96 * 96 or len(labels) == 0 or not 1 <= labels.min() <= labels.max() <= 10:
        raise malformed("stl10", image_path, f"holds {raw.size} bytes for {len(labels)} labels in {label_path.name} "
                         "(expected 27,648 bytes per image and labels 1..10)", what)
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # stored column-major per channel
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels - 1)


@register("stl10", kind="imagenet", splits=("train", "test"))
def stl10(split, root=None, seed=0):
    """STL-10 (Coates et al. 2011), binary version, labelled part; 96 x 96 images."""
    what = "the STL-10 binary version (the extracted stl10_binary.tar.gz)"
    base = locate("stl10", root, "stl10_binary", "class_names.txt", what)
    images, labels = _stl10_arrays(base, split)
    return with_sources(TensorImageDataset("stl10", images, labels, read_lines(base / "class_names.txt")),
                        *(base / f for f in (f"{split}_X.bin", f"{split}_y.bin", "class_names.txt")))


# ----------------------------------------------------------------------------- file-list datasets

@register("flowers102", kind="imagenet", splits=("train", "val", "test"))
def flowers102(split, root=None, seed=0):
    """Oxford Flowers-102 (Nilsback and Zisserman 2008): jpg/image_%05d.jpg, imagelabels.mat
    (labels 1..102), setid.mat (trnid, valid, tstid)."""
    what = "the Oxford 102 Flowers files (jpg/ from 102flowers.tgz, imagelabels.mat, setid.mat)"
    base = locate("flowers102", root, "flowers-102", "setid.mat", what)
    require("flowers102", base, "jpg", what)
    label_file = require("flowers102", base, "imagelabels.mat", what)
    ids, = read_mat("flowers102", base / "setid.mat", ({"train": "trnid", "val": "valid", "test": "tstid"}[split],),
                    "the original setid.mat", squeeze_me=True)
    labels, = read_mat("flowers102", label_file, ("labels",), "the original imagelabels.mat", squeeze_me=True)
    ids, labels = np.atleast_1d(ids).astype(np.int64), np.atleast_1d(labels).astype(np.int64)
    if ids.size and (ids.min() < 1 or ids.max() > len(labels)):
        raise malformed("flowers102", base / "setid.mat", f"names images beyond the {len(labels)} in imagelabels.mat",
                         "the original file")
    paths = [base / "jpg" / f"image_{i:05d}.jpg" for i in ids]
    return with_sources(FileImageDataset("flowers102", paths, labels[ids - 1] - 1, Flowers102.classes),
                        base / "setid.mat", label_file)


@register("pets", kind="imagenet", splits=("train", "test"))
def pets(split, root=None, seed=0):
    """Oxford-IIIT Pet (Parkhi et al. 2012), 37 breeds; train = trainval.txt, test = test.txt."""
    what = "the Oxford-IIIT Pet images/ and annotations/ (extracted images.tar.gz and annotations.tar.gz)"
    base = locate("pets", root, "oxford-iiit-pet", "annotations", what)
    require("pets", base, "images", what)
    list_file = require("pets", base, f"annotations/{'trainval' if split == 'train' else 'test'}.txt", what)
    paths, labels, breeds = [], [], {}
    for line in read_lines(list_file):
        fields = line.split()
        if len(fields) != 4 or not fields[1].isdigit():
            raise malformed("pets", list_file, f"has the line {line!r}, not 'IMAGE CLASS_ID SPECIES BREED_ID'",
                             "the original file")
        label = int(fields[1]) - 1
        paths.append(base / "images" / f"{fields[0]}.jpg")
        labels.append(label)
        breeds[label] = " ".join(part.title() for part in fields[0].rsplit("_", 1)[0].split("_"))
    if sorted(breeds) != list(range(len(breeds))):
        raise malformed("pets", list_file, f"has class ids {sorted(breeds)}, not 1..{len(breeds)}", "the original file")
    return with_sources(FileImageDataset("pets", paths, labels, [breeds[i] for i in range(len(breeds))]), list_file)


@register("aircraft", kind="imagenet", splits=("train", "val", "test"))
def aircraft(split, root=None, seed=0):
    """FGVC-Aircraft 2013b (Maji et al. 2013), 100 variants; train = trainval."""
    what = "the FGVC-Aircraft 2013b data/ folder (the extracted fgvc-aircraft-2013b.tar.gz)"
    base = locate("aircraft", root, "fgvc-aircraft-2013b", "data/variants.txt", what) / "data"
    classes = read_lines(base / "variants.txt")
    index = {c: i for i, c in enumerate(classes)}
    list_file = require("aircraft", base, f"images_variant_{'trainval' if split == 'train' else split}.txt", what)
    paths, labels = [], []
    for line in read_lines(list_file):
        image, _, variant = line.partition(" ")
        if variant not in index:
            raise malformed("aircraft", list_file, f"has the line {line!r} whose variant is not in variants.txt",
                             "the original file")
        paths.append(base / "images" / f"{image}.jpg")
        labels.append(index[variant])
    return with_sources(FileImageDataset("aircraft", paths, labels, classes), base / "variants.txt", list_file)


@register("dtd", kind="imagenet", splits=("train", "val", "test"))
def dtd(split, root=None, seed=0, partition=1):
    """Describable Textures (Cimpoi et al. 2014), 47 classes; ``partition`` picks one of the 10 official splits."""
    if not 1 <= int(partition) <= 10:
        raise ValueError(f"dtd: partition must be 1..10, got {partition}")
    what = "the DTD images/ and labels/ folders (the extracted dtd-r1.0.1.tar.gz)"
    list_name = f"labels/{split}{int(partition)}.txt"
    if root is not None and (root / "dtd" / "dtd" / list_name).exists():
        root = root / "dtd"  # torchvision's layout
    base = locate("dtd", root, "dtd", list_name, what)
    require("dtd", base, "images", what)
    entries = [line.split("/", 1) for line in read_lines(base / list_name)]
    if any(len(e) != 2 for e in entries):
        raise malformed("dtd", base / list_name, "has lines that are not CLASS/FILE", "the original file")
    classes = sorted({c for c, _ in entries})
    index = {c: i for i, c in enumerate(classes)}
    paths = [base / "images" / c / f for c, f in entries]
    return with_sources(FileImageDataset("dtd", paths, [index[c] for c, _ in entries], classes), base / list_name)


# ----------------------------------------------------------------------------- image folders

@functools.lru_cache(maxsize=1)
def imagenet100_classes() -> tuple[str, ...]:
    """The 100 ImageNet wnids of the ImageNet-100 subset of CMC (Tian et al. 2019), in the file's order."""
    return tuple(read_lines(IMAGENET100_CLASSES_FILE))


@register("imagenet100", kind="imagenet", splits=("train", "val", "test"))
def imagenet100(split, root=None, seed=0):
    """ImageNet-100: ``root/train`` and ``root/val`` class folders named by wnid (the full
    ImageNet-1k folders work too: only the 100 listed classes are kept). Labels follow the
    sorted wnids, as torchvision's ImageFolder gives on a folder of just these classes."""
    what = "ImageNet class folders named by wnid (n01558993, ...)"
    folder = "val" if split in ("val", "test") else "train"
    if root is None:
        raise DatasetError(f"imagenet100: no root given; pass root=<folder holding train/ and val/>, with {what} in each")
    base = require("imagenet100", root, folder, what)
    listed = set(imagenet100_classes())
    classes = [c for c in class_folders("imagenet100", base) if c in listed]
    if not classes:
        raise DatasetError(f"imagenet100: {base} holds none of the 100 classes listed in {IMAGENET100_CLASSES_FILE}; put {what} there")
    if len(classes) < len(listed):
        warnings.warn(f"imagenet100: {base} holds {len(classes)} of the 100 listed classes; labels cover only those",
                      stacklevel=2)
    paths, labels = scan_folder("imagenet100", base, classes)
    return with_sources(FileImageDataset("imagenet100", paths, labels, classes))


_SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}


def holdout_split(labels: list[int], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) sample indices of scikit-learn's stratified ``train_test_split`` (the official
    NC-OOD hold-out), each sorted; a folder it cannot split is a one-line DatasetError."""
    from sklearn.model_selection import train_test_split

    try:
        train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=seed,
                                       stratify=labels)
    except ValueError as error:
        raise DatasetError(f"imagefolder: holdout={test_fraction} cannot split this folder stratified by class "
                           f"({error}); every class needs at least 2 images and the test part one per class") from None
    return sorted(int(i) for i in train), sorted(int(i) for i in test)


@register("imagefolder", kind="imagenet", splits=("train", "test"))
def imagefolder(split, root=None, seed=0, holdout=None):
    """A folder of class folders (NINCO, ImageNet-R, CUB-200, ...). The split reads ``root/train``
    or ``root/test`` (else ``root/val``) when present, otherwise ``root`` itself. ``holdout=f``
    splits that one folder, stratified by class, as the official NC-OOD code splits NINCO:
    scikit-learn's ``train_test_split(indices, test_size=f, random_state=seed, stratify=labels)``
    over the images in torchvision ImageFolder order (classes sorted, files sorted), so the same
    folder and seed give the official test part (``split='test'``) and train part.

    Every split numbers its classes as the training split does (the sorted class folders of
    ``root/train`` when present), so a test split lacking a class keeps the others' labels; a
    split with a class folder the training split lacks is an error. Without split folders and
    without ``holdout`` the test split is the training images, and the dataset says so
    (``test_is_train``)."""
    if root is None:
        raise DatasetError("imagefolder: no root given; pass root=<folder of class folders, or of train/ and test/ folders>")
    if holdout is not None and not 0.0 < float(holdout) < 1.0:
        raise ValueError(f"imagefolder: holdout must be a fraction in (0, 1), got {holdout}")
    if holdout is None:
        folder = next((root / sub for sub in _SPLIT_FOLDERS[split] if (root / sub).is_dir()), root)
    else:
        folder = root
    classes = class_folders("imagefolder", folder)
    split_folders = sorted({"train", "val", "test"} & set(classes))
    if folder == root and split_folders:
        if holdout is not None:
            raise DatasetError(f"imagefolder: {root} has split folders {split_folders}; holdout splits a single folder "
                               "of class folders, so drop holdout or point root at one split")
        raise DatasetError(f"imagefolder: {root} has split folders {split_folders} but no "
                           f"{' or '.join(_SPLIT_FOLDERS[split])}/; put the {split} class folders there")
    names = classes  # the class-to-index map of every split: the training split's class folders
    if folder not in (root, root / "train") and (root / "train").is_dir():
        names = class_folders("imagefolder", root / "train")
        extra = sorted(set(classes) - set(names))
        if extra:
            raise DatasetError(f"imagefolder: {folder} has class folder(s) {', '.join(extra)} that {root / 'train'} "
                               "lacks; every split must use the training split's classes (add them there or remove them)")
    paths, labels = scan_folder("imagefolder", folder, classes)
    index = {name: i for i, name in enumerate(names)}
    labels = [index[classes[label]] for label in labels]
    if holdout is not None:
        train, test = holdout_split(labels, float(holdout), seed)
        keep = train if split == "train" else test
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    dataset = with_sources(FileImageDataset("imagefolder", paths, labels, names))
    dataset.test_is_train = split == "test" and holdout is None and folder == root
    return dataset
