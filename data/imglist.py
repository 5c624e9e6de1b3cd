"""OpenOOD's image lists: the ``imglist`` dataset.

An image list is a text file with one image a line, ``relative/path LABEL``: the path relative
to a data folder (OpenOOD's ``images_classic/`` or ``images_largescale/``), no spaces in it, and
an integer label, ``-1`` for an image without one (every OOD list of OpenOOD v1.5 labels all its
images -1). A line holding only a path counts as -1 too. OpenOOD's ImglistDataset also reads a
dictionary of extra fields after the path (its MOS training lists); those lists are refused here.

    imglist:root=DATA/images_classic,list=DATA/benchmark_imglist/cifar10/test_tin.txt
    cifar10=imglist:root=DATA/images_classic,list=DATA/benchmark_imglist/cifar10/{split}_cifar10.txt

``{split}`` in ``list`` is replaced by the split asked for (``train``, ``val`` or ``test``), as
OpenOOD names its lists; a list without it serves every split (its ``test`` then holds the
``train`` images, ``test_is_train``). Relative paths are relative to the working directory.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from data.dataset import DatasetError, FileImageDataset
from data.files import with_sources
from data.registry import register

#: The one class of a list whose images carry no label (OpenOOD's OOD lists).
UNLABELLED = "unlabelled"


def _parse_line(path: Path, number: int, line: str) -> tuple[str, int]:
    fields = line.split()
    label = fields[1] if len(fields) == 2 else "-1" if len(fields) == 1 else None
    if label is None or not label.lstrip("-").isdigit() or int(label) < -1:
        extra = " (a dictionary of extra fields, as OpenOOD's MOS lists hold, is not read)" if "{" in line else ""
        raise DatasetError(f"imglist: {path} line {number} is {line.strip()!r}, not 'PATH LABEL' with LABEL an "
                           f"integer >= 0 or -1{extra}; fix the line or use another list")
    if fields[0].startswith("/"):
        raise DatasetError(f"imglist: {path} line {number} names the absolute path {fields[0]}; a list's paths are "
                           "relative to root")
    return fields[0], int(label)


def read_imglist(path: Path) -> tuple[list[str], list[int]]:
    """(relative image paths, labels) of the image list ``path``; -1 where an image has no label."""
    try:
        with open(path) as handle:
            entries = [_parse_line(path, n, line) for n, line in enumerate(handle, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"imglist: {path} is not a readable text file ({error}); point list= at an image list") from None
    if not entries:
        raise DatasetError(f"imglist: {path} holds no lines; point list= at an image list with one 'PATH LABEL' a line")
    paths, labels = zip(*entries)
    return list(paths), list(labels)


def class_names(paths: list[str], labels: list[int]) -> list[str]:
    """Names of classes 0..max(labels): the folder holding every image of a class when each class
    has its own one (``cifar10/test/airplane/0001.png`` -> ``airplane``), else the label as text."""
    folders = defaultdict(set)
    for path, label in zip(paths, labels):
        folders[label].add(Path(path).parent.name)
    count = max(labels) + 1
    names = [next(iter(folders[k])) if len(folders[k]) == 1 else "" for k in range(count)]
    if "" in names or len(set(names)) != count:
        return [str(k) for k in range(count)]
    return names


def _split_classes(list_text: str, split: str, list_file: Path, paths: list[str], labels: list[int]) -> list[str]:
    """The classes of a labelled split: those of the ``train`` list when ``list_text`` names one per
    split and it is labelled (so every split numbers and names its classes alike), else its own."""
    train_file = Path(list_text.replace("{split}", "train")).expanduser().resolve()
    if "{split}" not in list_text or split == "train" or not train_file.is_file():
        return class_names(paths, labels)
    train_paths, train_labels = read_imglist(train_file)
    if min(train_labels) < 0:
        return class_names(paths, labels)
    names = class_names(train_paths, train_labels)
    if max(labels) >= len(names):
        raise DatasetError(f"imglist: {list_file} has label {max(labels)} but {train_file} only labels 0..{len(names) - 1}; "
                           "every split must use the training list's classes")
    return names


@register("imglist", kind="imagenet", splits=("train", "val", "test"))
def imglist(split, root=None, seed=0, list=None):  # noqa: A002  (the spec key is list=)
    """The images of an OpenOOD image list (``list``, see the module docstring) under ``root``.

    A labelled list numbers its classes 0..max label (names from :func:`class_names`), the
    ``val`` and ``test`` lists of a ``{split}`` list as its ``train`` list does; a list whose
    images all carry -1 is one class, ``unlabelled``. A list mixing both is refused."""
    if root is None or list is None:
        raise DatasetError("imglist: pass root=<the folder the list's paths start from> and list=<the image list file>, "
                           "e.g. imglist:root=DATA/images_classic,list=DATA/benchmark_imglist/cifar10/test_tin.txt")
    list_file = Path(str(list).replace("{split}", split)).expanduser().resolve()
    if not list_file.is_file():
        raise DatasetError(f"imglist: the image list {list_file} does not exist; point list= at an OpenOOD image list "
                           "(benchmark_imglist/<benchmark>/<split>_<dataset>.txt)")
    if not root.is_dir():
        raise DatasetError(f"imglist: root {root} is not a folder; point it at the folder the paths of {list_file} start from")
    paths, labels = read_imglist(list_file)
    unlabelled = [i for i, label in enumerate(labels) if label < 0]
    if unlabelled and len(unlabelled) < len(labels):
        labelled = next(i for i, label in enumerate(labels) if label >= 0)
        raise DatasetError(f"imglist: {list_file} mixes labelled images (e.g. {paths[labelled]}) with images labelled -1 "
                           f"(e.g. {paths[unlabelled[0]]}); an image list is either labelled or not")
    classes = [UNLABELLED] if unlabelled else _split_classes(str(list), split, list_file, paths, labels)
    dataset = FileImageDataset("imglist", [root / p for p in paths], [0] * len(paths) if unlabelled else labels, classes)
    dataset.test_is_train = split != "train" and "{split}" not in str(list)
    return with_sources(dataset, list_file)
