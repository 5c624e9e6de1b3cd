"""Datasets, transforms and class splits.

``build_dataset(name, split, ...)`` returns a dataset whose items are (float32 3 x S x S image
normalized with the ImageNet mean/std, int label) and which carries ``classes``, ``targets``,
``num_classes``, ``name`` and ``source_files``. Embedded datasets (no download, no path):
``fashion_mnist`` (the default), ``animal_mnist``, ``digits``, ``textures`` - see :mod:`data.embedded`.
Path-based datasets (``root`` required): see :mod:`data.natural` (CIFAR, SVHN, STL-10, the transfer
sets, ImageNet-100, image folders), :mod:`data.openood` (MNIST, Tiny ImageNet, Places365) and
:mod:`data.imglist` (OpenOOD's image lists). OpenOOD v1.5's benchmarks as dataset specs:
:func:`data.benchmarks.benchmark_specs`.

``source_files`` (list of str, possibly empty): the files the builder read to make the dataset's
arrays, labels or file list - CIFAR's pickles, SVHN's .mat, STL-10's binaries, the IDX files of
MNIST and Fashion-MNIST, the label and split files of Flowers-102, Pets, Aircraft, DTD, Tiny
ImageNet and Places365, an image list - so a cache can fingerprint them. The image files a
:class:`FileImageDataset` reads on access are its ``paths``, not repeated here; datasets made in
memory from a package's data (``animal_mnist``, ``digits``, ``textures``) list nothing.
"""
from data import embedded, imglist, natural, openood  # noqa: F401  (registers the datasets)
from data.dataset import DatasetError, FileImageDataset, ImageDataset, TensorImageDataset
from data.registry import DATASETS, build_dataset, list_datasets, register
from data.splits import EMBEDDED_HELDOUT_CLASSES, EMBEDDED_ID_CLASSES, class_split, stratified_split
from data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform

__all__ = [
    "DATASETS", "DatasetError", "EMBEDDED_HELDOUT_CLASSES", "EMBEDDED_ID_CLASSES", "FileImageDataset",
    "IMAGENET_MEAN", "IMAGENET_STD", "ImageDataset", "TensorImageDataset", "build_dataset", "build_transform",
    "class_split", "list_datasets", "register", "stratified_split",
]
from data.specs import DatasetSpec, parse_classes, parse_spec  # noqa: E402

__all__ += ["DatasetSpec", "parse_classes", "parse_spec"]
