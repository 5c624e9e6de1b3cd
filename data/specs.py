"""Dataset specs on the command line and in YAML: ``[label=]name[:key=value,key=value...]``.

    fashion_mnist:classes=0-5                 the embedded ID classes
    near=fashion_mnist:classes=6-9            held-out classes, labelled 'near'
    ninco=imagefolder:root=/data/NINCO,holdout=0.2
    cifar100:root=/data/cifar100
    tin=imglist:root=/data/openood/images_classic,list=/data/openood/benchmark_imglist/cifar10/test_tin.txt

Keys: ``root``, ``classes`` (``6-9``, ``0+2+5`` or ``0-2+7``), ``max_per_class``, ``holdout``,
``partition``, ``list`` (``imglist``'s image list; values cannot hold a comma), ``image_size``, ``transform`` (``imagenet`` or ``small``: overrides the dataset's kind),
``stats`` (``imagenet``, the default, or ``own``: the dataset's own channel statistics, CIFAR-10/100).
Everything else in :func:`data.build_dataset` comes from the entry point's flags (``--image_size``, ``--max_per_class``, ``--seed``) unless the spec sets it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from data.dataset import DatasetError
from data.registry import DATASETS, list_datasets

_INT_KEYS = {"max_per_class", "partition", "image_size"}
_KEYS = {"root", "classes", "holdout", "transform", "stats", "list"} | _INT_KEYS


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: a display ``label`` and the ``build_dataset`` keyword arguments."""
    label: str
    name: str
    options: dict = field(default_factory=dict)

    def kwargs(self, **defaults) -> dict:
        """``build_dataset`` keyword arguments (without ``split``): defaults, then the spec's own."""
        return {"name": self.name, **defaults, **self.options}


def parse_classes(text: str) -> list[int]:
    """``6-9`` -> [6, 7, 8, 9]; ``0+2+5`` -> [0, 2, 5]; ``0-2+7`` -> [0, 1, 2, 7]."""
    out: list[int] = []
    for part in text.split("+"):
        lo, sep, hi = part.partition("-")
        if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
            raise DatasetError(f"bad class list {text!r}; write e.g. 6-9, 0+2+5 or 0-2+7")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return out


def parse_spec(text: str) -> DatasetSpec:
    """Parse ``[label=]name[:key=value,...]`` (see the module docstring)."""
    label, sep, rest = text.partition("=")
    if not sep or ":" in label:
        label, rest = "", text
    name, _, opts = rest.partition(":")
    name = name.strip()
    if name not in DATASETS:
        raise DatasetError(f"dataset spec {text!r}: unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    options: dict = {}
    for item in filter(None, (s.strip() for s in opts.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in _KEYS:
            raise DatasetError(f"dataset spec {text!r}: bad option {item!r}; use key=value with keys {', '.join(sorted(_KEYS))}")
        try:
            options[key] = _value(key, value)
        except ValueError as error:
            raise DatasetError(f"dataset spec {text!r}: bad value in {item!r} ({error})") from None
    return DatasetSpec(label.strip() or name, name, options)


def _value(key: str, value: str):
    """A spec option's value as ``build_dataset`` takes it; ValueError says what is expected."""
    if key == "classes":
        return parse_classes(value)
    kind = int if key in _INT_KEYS else float if key == "holdout" else None
    if kind is None:
        return value
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{key} takes {'an integer' if kind is int else 'a number'}, not {value!r}") from None
