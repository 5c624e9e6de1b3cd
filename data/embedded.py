"""Small real datasets available without any download: 28 x 28 grayscale, transform kind ``small``.

========================  ==========  =======================  ===========================================
name                      classes     train / test             source
========================  ==========  =======================  ===========================================
``fashion_mnist``         10          60,000 / 10,000          IDX files (Xiao et al. 2017), official split
``animal_mnist``          10          7,775 / 1,941            PyPI package ``animal-mnist==0.4`` (animal
                                                               silhouettes; its 9,716 distinct images),
                                                               stratified 80/20 split, seed 0
``digits``                10          1,347 / 450              scikit-learn ``load_digits`` (UCI optical
                                                               digits, 8 x 8, 0..16) upsampled bilinearly
                                                               to 28 x 28, stratified 75/25 split, seed 0
``textures``              4           164 / 160                patches of scikit-image's bundled images
                                                               brick, grass, gravel, hubble_deep_field
========================  ==========  =======================  ===========================================

The fixed splits of ``animal_mnist`` and ``digits`` do not depend on ``build_dataset``'s seed,
so every run sees the same test set. Decoded arrays are cached per process; images are kept as
uint8 tensors ``N x 1 x 28 x 28``.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data.dataset import DatasetError, TensorImageDataset
from data.files import read_idx_split, with_sources
from data.registry import register
from data.splits import stratified_split

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

# Label order verified by viewing the images: labels are contiguous blocks of 1,000 in this order.
ANIMAL_MNIST_CLASSES = ["Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra"]
_ANIMAL_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")

TEXTURE_IMAGES = ("brick", "grass", "gravel", "hubble_deep_field")
_PATCH = 56  # texture patches are 56 x 56 pixels, averaged 2 x 2 down to 28 x 28
_GRID = 9  # a 9 x 9 grid of patches from the central 504 x 504 pixels of each image


def _to_tensor(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x H x W images and integer labels -> (uint8 N x 1 x H x W, int64 N) tensors."""
    return torch.from_numpy(np.array(images, dtype=np.uint8)[:, None]), torch.from_numpy(np.array(labels, dtype=np.int64))


def _split_part(split: str, images, labels, test_fraction: float):
    """The train or test part of a fixed stratified split (seed 0)."""
    train, test = stratified_split(labels, test_fraction, seed=0)
    keep = torch.from_numpy(train if split == "train" else test)
    return images[keep], labels[keep]


# ----------------------------------------------------------------------------- Fashion-MNIST

@functools.lru_cache(maxsize=None)
def _fashion_arrays(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[Path, Path]]:
    images, labels, files = read_idx_split("fashion_mnist", root, "FashionMNIST/raw", _FASHION_FILES[split],
                                           "the four Fashion-MNIST IDX files")
    return (*_to_tensor(images, labels), files)


@register("fashion_mnist", kind="small", splits=("train", "test"))
def fashion_mnist(split, root=None, seed=0):
    """Fashion-MNIST: ``root`` (default /usr/share/datasets/fashion-mnist) holds the IDX files,
    gzipped or not, directly or in torchvision's layout ``<root>/FashionMNIST/raw/``."""
    images, labels, files = _fashion_arrays(FASHION_MNIST_ROOT if root is None else Path(root), split)
    return with_sources(TensorImageDataset("fashion_mnist", images, labels, FASHION_MNIST_CLASSES), *files)


# ----------------------------------------------------------------------------- Animal-MNIST

def _animal_mnist_dir() -> Path:
    """The installed package's data folder, found without importing the package (its loader
    module imports tensorflow)."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("animal_mnist: the package animal-mnist is not installed; "
                           "run `pip install --no-deps animal-mnist==0.4` or pass root=<folder with its two .gz files>")
    return Path(spec.submodule_search_locations[0]) / "data" / "Animal_MNIST"


def _unpickle_gzip(path: Path, name: str):
    try:
        with gzip.open(path, "rb") as handle:
            return pickle.load(handle)
    except FileNotFoundError:
        raise DatasetError(f"{name}: {path} is missing; put the dataset's file {path.name} there") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as error:
        raise DatasetError(f"{name}: {path} is not a gzipped pickle ({error}); replace it with the original file") from None


@functools.lru_cache(maxsize=None)
def _animal_arrays(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images = _unpickle_gzip(folder / _ANIMAL_FILES[0], "animal_mnist")
    labels = _unpickle_gzip(folder / _ANIMAL_FILES[1], "animal_mnist")
    if (not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray) or images.dtype != np.uint8
            or images.shape[1:] != (28, 28) or labels.shape != (len(images),) or not 0 <= labels.min() <= labels.max() <= 9):
        raise DatasetError(f"animal_mnist: {folder} does not hold 28 x 28 uint8 images with labels 0..9 "
                           f"in {_ANIMAL_FILES[0]} / {_ANIMAL_FILES[1]}; reinstall animal-mnist==0.4")
    # 284 images occur twice; keep the first copy so no image is in both train and test
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    first = np.sort(first)
    return _to_tensor(images[first], labels[first])


@register("animal_mnist", kind="small", splits=("train", "test"))
def animal_mnist(split, root=None, seed=0):
    """Animal-MNIST 0.4: 10,000 animal silhouettes, 1,000 per class, of which 9,716 are distinct
    (812 to 1,000 per class) and kept; read from the installed package's gzip-pickled arrays
    (or from ``root`` holding the same two files)."""
    images, labels = _animal_arrays(_animal_mnist_dir() if root is None else Path(root))
    images, labels = _split_part(split, images, labels, test_fraction=0.2)
    return TensorImageDataset("animal_mnist", images, labels, ANIMAL_MNIST_CLASSES)


# ----------------------------------------------------------------------------- digits

@functools.lru_cache(maxsize=None)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.from_numpy(digits.images).to(torch.float64)[:, None] / 16.0
    large = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    images = (large * 255.0).round().clamp(0, 255).to(torch.uint8)
    return images, torch.from_numpy(digits.target).long()


@register("digits", kind="small", splits=("train", "test"))
def digits(split, root=None, seed=0):
    """scikit-learn's 8 x 8 handwritten digits (1,797 images) upsampled to 28 x 28; ``root`` is unused."""
    images, labels = _split_part(split, *_digits_arrays(), test_fraction=0.25)
    return TensorImageDataset("digits", images, labels, [str(d) for d in range(10)])


# ----------------------------------------------------------------------------- textures

def _texture_patches(image: np.ndarray) -> np.ndarray:
    """A 9 x 9 grid of non-overlapping 56 x 56 patches from the image centre, each averaged
    2 x 2 down to 28 x 28; returns uint8 81 x 28 x 28 in row-major grid order."""
    side = _PATCH * _GRID
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    centre = image[top:top + side, left:left + side].astype(np.float64)
    half = _PATCH // 2
    blocks = centre.reshape(_GRID * half, 2, _GRID * half, 2).mean(axis=(1, 3))
    patches = blocks.reshape(_GRID, half, _GRID, half).transpose(0, 2, 1, 3).reshape(-1, half, half)
    return np.round(patches).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _texture_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    import skimage.data
    from skimage.color import rgb2gray

    patches, labels = [], []
    for label, image_name in enumerate(TEXTURE_IMAGES):
        image = getattr(skimage.data, image_name)()
        if image.ndim == 3:
            image = np.round(rgb2gray(image) * 255.0)
        patches.append(_texture_patches(image))
        labels.append(np.full(_GRID * _GRID, label))
    return _to_tensor(np.concatenate(patches), np.concatenate(labels))


@register("textures", kind="small", splits=("train", "test"))
def textures(split, root=None, seed=0):
    """Grayscale texture patches of scikit-image's bundled images (label = source image). Patch
    (r, c) of the 9 x 9 grid is in the train split when r + c is even, else in the test split
    (a checkerboard, so both splits cover the whole image); ``root`` is unused."""
    images, labels = _texture_arrays()
    grid = np.arange(_GRID * _GRID)
    in_train = ((grid // _GRID + grid % _GRID) % 2 == 0)
    mask = torch.from_numpy(np.tile(in_train if split == "train" else ~in_train, len(TEXTURE_IMAGES)))
    return TensorImageDataset("textures", images[mask], labels[mask], list(TEXTURE_IMAGES))
