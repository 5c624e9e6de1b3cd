"""OpenOOD v1.5's benchmark presets as data, read from a folder laid out as OpenOOD's data folder.

Each benchmark names its in-distribution set, near-OOD sets, far-OOD sets and the one
validation OOD set a hyperparameter search may look at (Zhang et al., OpenOOD v1.5, 2023;
``openood/evaluation_api/datasets.py``):

============  ==================  ===========================  ==================================  ==================
benchmark     ID (train / test)   near-OOD                     far-OOD                             validation OOD
============  ==================  ===========================  ==================================  ==================
cifar10       CIFAR-10            CIFAR-100, TinyImageNet      MNIST, SVHN, Textures, Places365    TinyImageNet (val)
cifar100      CIFAR-100           CIFAR-10, TinyImageNet       MNIST, SVHN, Textures, Places365    TinyImageNet (val)
imagenet200   ImageNet-200        SSB-hard, NINCO              iNaturalist, Textures, OpenImage-O  OpenImage-O (val)
============  ==================  ===========================  ==================================  ==================

Every set is read through OpenOOD's own image list, so the images are exactly OpenOOD's; in the
CIFAR-10 benchmark, e.g., the ID test list holds 9,000 of CIFAR-10's test images (the other 1,000
form its ID validation list), the TinyImageNet lists a selection of Tiny ImageNet's validation
images (7,793 test, 1,000 validation, disjoint), the MNIST list all 70,000 MNIST images and the
Places365 list 35,195 of its validation images.

The root folder (``--benchmark_root``), as OpenOOD's download script lays it out::

    ROOT/benchmark_imglist/<benchmark>/<split>_<dataset>.txt     the image lists (benchmark_imglist.zip)
    ROOT/images_classic/{cifar10,cifar100,tin,mnist,svhn,texture,places365}/
    ROOT/images_largescale/{imagenet_1k,ssb_hard,ninco,inaturalist,openimage_o}/

A benchmark needs only its own lists and folders. :func:`benchmark_specs` checks them (each list,
each folder and the first image of each list) before anything is read, and nothing is ever
downloaded: a missing piece is one line saying where it is published.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from data.dataset import DatasetError
from data.imglist import read_imglist

OPENOOD_DOWNLOAD = "OpenOOD's scripts/download/download.py (github.com/Jingkang50/OpenOOD)"


class Source(NamedTuple):
    """One image folder of OpenOOD's data folder: ``ROOT/<tier>/<key>``."""
    tier: str
    what: str
    page: str


SOURCES = {
    "cifar10": Source("images_classic", "CIFAR-10 as PNG files (cifar10/{train,test}/<class>/*.png)",
                      "https://www.cs.toronto.edu/~kriz/cifar.html"),
    "cifar100": Source("images_classic", "CIFAR-100 as PNG files (cifar100/{train,test}/<class>/*.png)",
                       "https://www.cs.toronto.edu/~kriz/cifar.html"),
    "tin": Source("images_classic", "Tiny ImageNet (tin/val/images/*.JPEG, the extracted tiny-imagenet-200.zip)",
                  "http://cs231n.stanford.edu/tiny-imagenet-200.zip"),
    "mnist": Source("images_classic", "MNIST as image files (mnist/{train,test}/*.jpg)", "http://yann.lecun.com/exdb/mnist/"),
    "svhn": Source("images_classic", "the SVHN test digits as image files (svhn/test/*.jpg)",
                   "http://ufldl.stanford.edu/housenumbers/"),
    "texture": Source("images_classic", "the Describable Textures images (texture/<class>/*.jpg)",
                      "https://www.robots.ox.ac.uk/~vgg/data/dtd/"),
    "places365": Source("images_classic", "Places365 validation images in category folders (places365/<category>/*.jpg)",
                        "http://places2.csail.mit.edu/download.html"),
    "imagenet_1k": Source("images_largescale", "ImageNet-1k (ILSVRC 2012) images (imagenet_1k/{train,val}/)",
                          "https://image-net.org/download.php"),
    "ssb_hard": Source("images_largescale", "SSB-hard, ImageNet-21k classes (ssb_hard/<wnid>/)",
                       "https://github.com/sgvaze/SSB"),
    "ninco": Source("images_largescale", "NINCO (ninco/<class>/)", "https://github.com/j-cb/NINCO"),
    "inaturalist": Source("images_largescale", "the iNaturalist OOD subset of MOS (inaturalist/images/)",
                          "https://github.com/deeplearning-wisc/large_scale_ood"),
    "openimage_o": Source("images_largescale", "OpenImage-O (openimage_o/images/)", "https://github.com/haoqiwang/vim"),
}


class Part(NamedTuple):
    """One set of a benchmark: its label, its image folder (a key of :data:`SOURCES`) and its list file."""
    label: str
    source: str
    list: str


@dataclass(frozen=True)
class Preset:
    id: Part
    near: tuple[Part, ...]
    far: tuple[Part, ...]
    val_ood: Part


_CLASSIC_FAR = (Part("mnist", "mnist", "test_mnist.txt"), Part("svhn", "svhn", "test_svhn.txt"),
                Part("texture", "texture", "test_texture.txt"), Part("places365", "places365", "test_places365.txt"))

#: OpenOOD v1.5's benchmarks; an ID list name holds ``{split}`` (train, val, test).
BENCHMARKS = {
    "cifar10": Preset(Part("cifar10", "cifar10", "{split}_cifar10.txt"),
                      (Part("cifar100", "cifar100", "test_cifar100.txt"), Part("tin", "tin", "test_tin.txt")),
                      _CLASSIC_FAR, Part("val_tin", "tin", "val_tin.txt")),
    "cifar100": Preset(Part("cifar100", "cifar100", "{split}_cifar100.txt"),
                       (Part("cifar10", "cifar10", "test_cifar10.txt"), Part("tin", "tin", "test_tin.txt")),
                       _CLASSIC_FAR, Part("val_tin", "tin", "val_tin.txt")),
    "imagenet200": Preset(Part("imagenet200", "imagenet_1k", "{split}_imagenet200.txt"),
                          (Part("ssb_hard", "ssb_hard", "test_ssb_hard.txt"), Part("ninco", "ninco", "test_ninco.txt")),
                          (Part("inaturalist", "inaturalist", "test_inaturalist.txt"),
                           Part("textures", "texture", "test_textures.txt"),
                           Part("openimage_o", "openimage_o", "test_openimage_o.txt")),
                          Part("val_openimage_o", "openimage_o", "val_openimage_o.txt")),
}

#: The splits of the ID list an evaluation reads (fit on train, score test).
ID_SPLITS = ("train", "test")


@dataclass(frozen=True)
class Benchmark:
    """A benchmark as dataset specs (:func:`data.parse_spec`): ``id`` (its ``train`` and ``test``
    splits are OpenOOD's ID lists), ``near`` and ``far`` (tuples), ``val_ood`` (any split reads its list)."""
    name: str
    id: str
    near: tuple[str, ...]
    far: tuple[str, ...]
    val_ood: str


def _missing(name: str, problem: str, holds: str, get: str) -> DatasetError:
    return DatasetError(f"benchmark {name}: {problem}; it holds {holds}: get {get} (nothing is downloaded here)")


def _checked_part(name: str, root: Path, part: Part, splits: tuple[str, ...]) -> str:
    """The spec of ``part`` after checking its list file(s), its image folder and each list's first image."""
    source = SOURCES[part.source]
    lists = root / "benchmark_imglist" / name
    folder = root / source.tier / part.source
    get = (f"OpenOOD's '{part.source}' archive with {OPENOOD_DOWNLOAD}, or the data from {source.page} laid out "
           "so, and unpack it there")
    for split in splits:
        list_file = lists / part.list.replace("{split}", split)
        if not list_file.is_file():
            raise _missing(name, f"{lists} has no {list_file.name}", "OpenOOD's image lists",
                           f"benchmark_imglist.zip with {OPENOOD_DOWNLOAD} and unpack it in {root}")
        if not folder.is_dir():
            raise _missing(name, f"{folder} is missing", source.what, get)
        first = root / source.tier / read_imglist(list_file)[0][0]
        if not first.is_file():
            raise _missing(name, f"{first}, the first image of {list_file.name}, is missing", source.what, get)
    return f"{part.label}=imglist:root={root / source.tier},list={lists / part.list}"


def benchmark_specs(name: str, root: str | Path) -> Benchmark:
    """The dataset specs of OpenOOD v1.5 benchmark ``name`` (a key of :data:`BENCHMARKS`) over
    ``root``, OpenOOD's data folder (see the module docstring), checked before anything runs:
    a missing list, folder or first image is one :class:`~data.dataset.DatasetError` line."""
    if name not in BENCHMARKS:
        raise DatasetError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"benchmark {name}: {root} is not a folder; point it at OpenOOD's data folder "
                           "(benchmark_imglist/, images_classic/, images_largescale/)")
    if "," in str(root):
        raise DatasetError(f"benchmark {name}: the path {root} holds a comma, which a dataset spec cannot carry; "
                           "move or link the folder to a path without one")
    preset = BENCHMARKS[name]
    return Benchmark(name, _checked_part(name, root, preset.id, ID_SPLITS),
                     tuple(_checked_part(name, root, part, ("test",)) for part in preset.near),
                     tuple(_checked_part(name, root, part, ("test",)) for part in preset.far),
                     _checked_part(name, root, preset.val_ood, ("val",)))
