"""Datasets, transforms and class splits.

``build_dataset(name, split, ...)`` returns a dataset whose items are (float32 3 x S x S image
normalized with the ImageNet mean/std, int label) and which carries ``classes``, ``targets``,
``num_classes`` and ``name``. Embedded datasets (no download, no path): ``fashion_mnist``
(the default), ``animal_mnist``, ``digits``, ``textures`` - see :mod:`data.embedded`.
Path-based datasets (``root`` required): see :mod:`data.natural`.
"""
from data import embedded, natural  # noqa: F401  (registers the datasets)
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
