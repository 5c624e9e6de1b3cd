"""Finding and reading a dataset's files, each problem one :class:`~data.dataset.DatasetError` line
that names the path and what belongs there.

Class folders are walked with their symbolic links followed, except a directory link that leads
back to the class folder or one above it (a loop: the walk would go round until the path grows
too long, labelling every image it meets with this class), into another class folder of the
same dataset, or to a directory the walk has already read; each of those is an error naming the
class folder and the link.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS

from data.dataset import DatasetError
from data.idx import read_idx


def locate(name: str, root: Path | None, folder: str, required: str, what: str) -> Path:
    """The directory holding ``required``: ``root/folder`` or else ``root`` itself."""
    if root is None:
        raise DatasetError(f"{name}: no root given; pass root=<folder holding {folder}/>, with {what} in it")
    for base in (root / folder, root):
        if (base / required).exists():
            return base
    raise DatasetError(f"{name}: {root} has no {folder}/{required}; put {what} there")


def require(name: str, base: Path, relative: str, what: str) -> Path:
    """``base/relative``, which must exist."""
    path = base / relative
    if not path.exists():
        raise DatasetError(f"{name}: {base} has no {relative}; put {what} there")
    return path


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a text file, stripped."""
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip()]


def malformed(name: str, path: Path, problem: str, what: str) -> DatasetError:
    return DatasetError(f"{name}: {path} {problem}; replace it with {what}")


def read_mat(name: str, path: Path, keys: tuple[str, ...], what: str, **options) -> list:
    """The variables ``keys`` of MATLAB file ``path`` (scipy's ``loadmat`` with ``options``); a
    missing, truncated, garbage or HDF5-based (v7.3) file, or one lacking a variable, is one line naming it."""
    from scipy.io.matlab import MatReadError, loadmat

    try:
        content = loadmat(path, **options)
    except FileNotFoundError:
        raise DatasetError(f"{name}: {path} is missing; put {what} there") from None
    except (MatReadError, OSError, ValueError, TypeError, IndexError, KeyError, NotImplementedError,
            zlib.error) as error:
        raise malformed(name, path, f"is not a readable MATLAB file ({type(error).__name__}: {error})", what) from None
    missing = [key for key in keys if key not in content]
    if missing:
        raise malformed(name, path, f"lacks the variable(s) {', '.join(missing)}", what)
    return [content[key] for key in keys]


def with_sources(dataset, *paths):
    """``dataset`` with ``source_files`` set to ``paths`` as str: the files its arrays or labels were read from."""
    dataset.source_files = [str(p) for p in paths]
    return dataset


def read_idx_split(name: str, root: Path, raw_folder: str, stems: tuple[str, str],
                   what: str) -> tuple[np.ndarray, np.ndarray, tuple[Path, Path]]:
    """The 28 x 28 images and 0..9 labels of an MNIST-style split: the IDX files ``stems`` (images,
    labels), gzipped or not, in ``root/raw_folder`` (torchvision's layout) or ``root``; returns
    (uint8 N x 28 x 28 images, N labels, the two files)."""
    for base in (root / raw_folder, root):
        found = [next((c for c in (base / f"{stem}.gz", base / stem) if c.is_file()), None) for stem in stems]
        if None not in found:
            break
    else:
        raise DatasetError(f"{name}: {root} has no {stems[0]}[.gz] and {stems[1]}[.gz] (nor under {raw_folder}/); "
                           f"put {what} there")
    image_file, label_file = found
    images, labels = read_idx(image_file, 3, name), read_idx(label_file, 1, name)
    if images.shape[1:] != (28, 28) or len(images) != len(labels) or labels.max(initial=0) > 9:
        raise DatasetError(f"{name}: {image_file} and {label_file} do not form a split of 28 x 28 images with labels "
                           f"0..9 (images {images.shape}, {len(labels)} labels up to {labels.max(initial=0)}); "
                           "replace them with the original files")
    return images, labels, (image_file, label_file)


def is_image(filename: str) -> bool:
    return filename.lower().endswith(IMG_EXTENSIONS)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _link_problem(target: str, here: str, top: str, dataset: str | None, walked: set[str]) -> str | None:
    """Why a directory link (resolved to ``target``, found in the directory resolved to ``here``)
    must not be followed from the class folder resolved to ``top``; None when it may be."""
    if _inside(here, target) or _inside(top, target):
        return "loops back to a folder it is inside of"
    if _inside(target, top):
        return "leads to a folder of this class read anyway, so its images would count twice"
    if dataset is not None and _inside(target, dataset):
        return "leads into another class folder of the dataset"
    if target in walked:
        return "leads to a folder already read"
    return None


def walk_images(name: str, class_dir: Path, dataset_dir: Path | None = None) -> list[Path]:
    """Image files under ``class_dir``, recursively, sorted; directory links are followed unless
    they loop, lead inside this class folder or into another class folder of ``dataset_dir``, or
    reach a directory already read (see the module docstring)."""
    top = os.path.realpath(class_dir)
    dataset = os.path.realpath(dataset_dir) if dataset_dir is not None else None
    walked, found = set(), []
    for directory, subdirs, files in os.walk(class_dir, followlinks=True):
        here = os.path.realpath(directory)
        walked.add(here)
        found.extend(Path(directory) / f for f in files if is_image(f))
        for link in (Path(directory) / sub for sub in subdirs):
            if not link.is_symlink():
                continue
            target = os.path.realpath(link)
            problem = _link_problem(target, here, top, dataset, walked)
            if problem:
                raise DatasetError(f"{name}: class folder {class_dir} has the link {link} -> {target}, which {problem}; "
                                   "remove the link or make it a plain folder of this class's images")
            walked.add(target)  # a second link to the same folder is refused
    return sorted(found)


def scan_folder(name: str, folder: Path, class_names: list[str]) -> tuple[list[Path], list[int]]:
    """Image files under ``folder/<class>/`` (recursively, sorted) and their labels (index in ``class_names``)."""
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        found = walk_images(name, folder / class_name, folder)
        if not found:
            raise DatasetError(f"{name}: {folder / class_name} holds no image files; add images or remove the folder")
        paths.extend(found)
        labels.extend([label] * len(found))
    return paths, labels


def class_folders(name: str, folder: Path) -> list[str]:
    """The sorted names of the class folders in ``folder`` (hidden ones left out)."""
    if not folder.is_dir():
        raise DatasetError(f"{name}: {folder} is not a folder; point root at a folder of class folders")
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DatasetError(f"{name}: {folder} has no class folders; put one folder of images per class there")
    return classes
