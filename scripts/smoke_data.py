"""Tiny copies of the paper's datasets, each in the on-disk format its reader in data/natural.py
expects, for ``scripts/reproduce_paper.sh --smoke`` and the tests of those readers.

    python scripts/smoke_data.py DEST      # writes DEST/<dataset>/..., prints `export VAR=path` lines

The writers take the content they store (labels, class names, images) so that a test can write
exactly the file it reads back; :func:`write_smoke_datasets` fills them with a few small images per
class, one colour per class plus noise (so a probe has something to learn). Only the standard
library, numpy, Pillow and scipy are imported: no torch.
"""
from __future__ import annotations

import os
import pickle
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

ROOT = Path(__file__).resolve().parents[1]
IMAGENET100_CLASSES_FILE = ROOT / "data" / "imagenet100_classes.txt"


# ----------------------------------------------------------------------------- images

def write_image(path, value, size=(20, 16), mode="RGB"):
    """A constant image; the format (PNG, JPEG) follows the file extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def class_colour(label: int) -> tuple[int, int, int]:
    return ((70 * label + 30) % 256, (110 * label + 90) % 256, (40 * label + 160) % 256)


def noisy_image(label: int, index: int, size: int) -> np.ndarray:
    """An RGB uint8 image (size x size x 3): the class colour plus noise seeded by (label, index)."""
    rng = np.random.default_rng(1000 * label + index)
    noise = rng.integers(-40, 41, size=(size, size, 3))
    return np.clip(np.array(class_colour(label)) + noise, 0, 255).astype(np.uint8)


def save_array(path, pixels: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_class_folders(folder, classes, per_class: int, size: int = 40, first_label: int = 0,
                        ext: str = "JPEG") -> None:
    """``folder/<class>/<class>_<i>.<ext>``: ``per_class`` noisy images of each class."""
    for k, name in enumerate(classes):
        for i in range(per_class):
            save_array(Path(folder) / name / f"{name}_{i}.{ext}", noisy_image(first_label + k, i, size))


# ----------------------------------------------------------------------------- CIFAR python pickles

def constant_cifar_images(labels):
    """One image per label, every pixel of channel c equal to (40 * label + 10 * c) % 256."""
    colours = np.array([[(40 * y + 10 * c) % 256 for c in range(3)] for y in labels], dtype=np.uint8)
    return np.repeat(colours[:, :, None], 32 * 32, axis=2).reshape(len(labels), 3072)


def write_pickle(path, content: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(content, f)


def write_cifar10(root, per_batch=4):
    """cifar-10-batches-py/: five training batches and a test batch of ``per_batch`` constant images."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        labels = [(i + j) % 10 for j in range(per_batch)]
        write_pickle(folder / name, {b"batch_label": name.encode(), b"data": constant_cifar_images(labels),
                                     b"labels": labels})
    write_pickle(folder / "batches.meta", {b"label_names": [f"class{k}".encode() for k in range(10)]})
    return folder


def write_cifar100(root, splits: dict[str, list[int]], images: dict[str, np.ndarray] | None = None):
    """cifar-100-python/: one pickle per split (``splits[split]``: its fine labels; ``images``: N x 3072
    uint8 rows, default constant ones) and ``meta`` with the 100 fine label names."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, labels in splits.items():
        data = constant_cifar_images(labels) if images is None else images[split]
        write_pickle(folder / split, {b"data": data, b"fine_labels": list(labels),
                                      b"coarse_labels": [0] * len(labels)})
    write_pickle(folder / "meta", {b"fine_label_names": [f"fine{k}".encode() for k in range(100)]})
    return folder


# ----------------------------------------------------------------------------- STL-10 binary

def write_stl10_split(folder, split: str, images: np.ndarray, labels) -> None:
    """``<split>_X.bin`` (N x 3 x 96 x 96 uint8, stored column-major per channel) and ``<split>_y.bin`` (1..10)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
    np.asarray(labels, dtype=np.uint8).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"c{k}" for k in range(10)) + "\n")


# ----------------------------------------------------------------------------- list-file datasets

def write_flowers102(base, labels, setid: dict[str, list[int]], image=None) -> None:
    """Flowers-102 files in ``base``: jpg/image_%05d.jpg (``image(i)``: its pixels or a colour),
    imagelabels.mat (``labels``: 1..102 per image) and setid.mat (trnid, valid, tstid: 1-based ids)."""
    base = Path(base)
    for i in range(1, len(labels) + 1):
        pixels = image(i) if image is not None else (i * 30 % 256, 0, 0)
        if isinstance(pixels, np.ndarray):
            save_array(base / "jpg" / f"image_{i:05d}.jpg", pixels)
        else:
            write_image(base / "jpg" / f"image_{i:05d}.jpg", pixels)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    savemat(base / "setid.mat", {key: np.array([ids]) for key, ids in setid.items()})


def write_list_dataset(base, lists: dict[str, list[str]], image_folder: str, image_names, pixels=None) -> None:
    """A dataset described by text files: ``lists[relative path]`` its lines; one JPEG per name in
    ``image_names`` under ``base/<image_folder>/`` (``pixels(k, name)``: an array, default a constant colour)."""
    base = Path(base)
    for relative, lines in lists.items():
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        (base / relative).write_text("".join(f"{line}\n" for line in lines))
    for k, name in enumerate(image_names):
        path = base / image_folder / f"{name}.jpg"
        if pixels is None:
            write_image(path, (5, 5, 5))
        else:
            save_array(path, pixels(k, name))


# ----------------------------------------------------------------------------- the smoke datasets

SMOKE_SIZE = 40          # pixels of the file-based images (the smoke chain trains at 32)
ID_CLASSES = 4           # ImageNet-100 classes
ID_TRAIN, ID_VAL = 8, 4  # images per ID class


def imagenet100_wnids(count: int) -> list[str]:
    return [line.strip() for line in IMAGENET100_CLASSES_FILE.read_text().splitlines() if line.strip()][:count]


def stl_images(labels: list[int], offset: int) -> np.ndarray:
    return np.stack([noisy_image(y, offset + i, 96).transpose(2, 0, 1) for i, y in enumerate(labels)])


def cifar_rows(labels: list[int], offset: int) -> np.ndarray:
    return np.stack([noisy_image(y, offset + i, 32).transpose(2, 0, 1).reshape(3072) for i, y in enumerate(labels)])


OOD_CLASSES = ["alpha", "beta", "gamma"]


def smoke_imagenet100(folder: Path) -> None:
    wnids = imagenet100_wnids(ID_CLASSES)
    write_class_folders(folder / "train", wnids, ID_TRAIN, SMOKE_SIZE)
    write_class_folders(folder / "val", wnids, ID_VAL, SMOKE_SIZE)


def smoke_split_folders(first_label: int):
    """A writer of ``train/`` and ``test/`` class folders (ImageNet-R, CUB-200)."""
    def write(folder: Path) -> None:
        for split, count in (("train", 4), ("test", 2)):
            write_class_folders(folder / split, OOD_CLASSES, count, SMOKE_SIZE, first_label=first_label)
    return write


def smoke_cifar100(folder: Path) -> None:
    train, test = [k % 3 for k in range(12)], [k % 3 for k in range(6)]
    write_cifar100(folder, {"train": train, "test": test},
                   images={"train": cifar_rows(train, 0), "test": cifar_rows(test, 100)})


def smoke_flowers102(folder: Path) -> None:
    labels = [1 + k % 3 for k in range(18)]
    write_flowers102(folder, labels,
                     {"trnid": list(range(1, 7)), "valid": list(range(7, 13)), "tstid": list(range(13, 19))},
                     image=lambda i: noisy_image(40 + labels[i - 1], i, SMOKE_SIZE))


def smoke_aircraft(folder: Path) -> None:
    variants, names = ["707-320", "A300B4", "F/A-18"], [f"{k:07d}" for k in range(9)]
    lines = [f"{name} {variants[k % 3]}" for k, name in enumerate(names)]
    write_list_dataset(folder / "data", {"variants.txt": variants, "images_variant_trainval.txt": lines[:6],
                                         "images_variant_test.txt": lines[6:]},
                       "images", names, lambda k, name: noisy_image(50 + k % 3, k, SMOKE_SIZE))


def smoke_pets(folder: Path) -> None:
    breeds = ["Abyssinian", "american_bulldog", "Bengal"]   # the species field: 1 cat, 2 dog
    names = [f"{breeds[k % 3]}_{k}" for k in range(9)]
    lines = [f"{name} {k % 3 + 1} {2 if k % 3 == 1 else 1} {k % 3 + 1}" for k, name in enumerate(names)]
    write_list_dataset(folder, {"annotations/trainval.txt": lines[:6], "annotations/test.txt": lines[6:]},
                       "images", names, lambda k, name: noisy_image(60 + k % 3, k, SMOKE_SIZE))


def smoke_stl10(folder: Path) -> None:
    labels = [1 + k % 3 for k in range(6)]
    for split, offset in (("train", 0), ("test", 100)):
        write_stl10_split(folder / "stl10_binary", split, stl_images(labels, offset), labels)


# {variable of scripts/reproduce_paper.sh: (its folder under the destination, its writer)}
SMOKE_DATASETS = {
    "DATA_DIR": ("imagenet100", smoke_imagenet100),
    "NINCO_DIR": ("ninco", lambda folder: write_class_folders(folder, OOD_CLASSES, 5, SMOKE_SIZE, first_label=10)),
    "IMAGENET_R_DIR": ("imagenet-r", smoke_split_folders(20)),
    "CIFAR100_DIR": ("cifar100", smoke_cifar100),
    "FLOWERS_DIR": ("flowers102", smoke_flowers102),
    "CUB_DIR": ("cub200", smoke_split_folders(30)),
    "AIRCRAFT_DIR": ("fgvc-aircraft-2013b", smoke_aircraft),
    "PETS_DIR": ("oxford-iiit-pet", smoke_pets),
    "STL10_DIR": ("stl10", smoke_stl10),
}


def smoke_folders(dest) -> dict[str, Path]:
    """{script variable: its folder under ``dest``}, as :func:`write_smoke_datasets` writes them."""
    return {var: Path(dest) / sub for var, (sub, _) in SMOKE_DATASETS.items()}


def write_smoke_datasets(dest=None, folders: dict | None = None) -> dict[str, Path]:
    """Every dataset of the paper's protocol, tiny: into ``folders`` ({variable: folder}, any subset), or
    all of them under ``dest``; returns {variable: folder}. NINCO holds 5 images in each of 3 classes, so
    that its stratified 20% hold-out keeps one per class."""
    folders = {var: Path(f) for var, f in (folders or smoke_folders(dest)).items()}
    for var, folder in folders.items():
        SMOKE_DATASETS[var][1](folder)
    return folders


def main(argv: list[str]) -> int:
    """Write the datasets into DEST (built in a temporary folder beside it, then renamed, so a DEST that
    exists is complete and is kept as it is) and print the variables of reproduce_paper.sh for them."""
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: {__doc__.split(chr(10) * 2)[1].strip()}")
        return 0
    if len(argv) != 1:
        print("error: scripts/smoke_data.py takes one argument, the destination folder; see --help", file=sys.stderr)
        return 2
    dest = Path(argv[0])
    if not dest.is_dir():
        building = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.rmtree(building, ignore_errors=True)
        write_smoke_datasets(building)
        building.rename(dest)
    for var, folder in smoke_folders(dest).items():
        print(f"export {var}={shlex.quote(str(folder))}")
    print(f"export SMOKE_NUM_CLASSES={ID_CLASSES}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
