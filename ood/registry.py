"""The one registry of OOD scorers: names -> classes, and `build_scorer`."""
from __future__ import annotations

import inspect

from ood.base import Scorer
from ood.density import GMMScorer, MahalanobisScorer
from ood.logit_scorers import EnergyScorer, MaxLogitScorer, MSPScorer
from ood.neighbors import KNNScorer
from ood.subspace import NECOScorer, ViMScorer

SCORERS: dict[str, type[Scorer]] = {
    "msp": MSPScorer,
    "maxlogit": MaxLogitScorer,
    "energy": EnergyScorer,
    "gmm": GMMScorer,
    "mahalanobis": MahalanobisScorer,
    "knn": KNNScorer,
    "vim": ViMScorer,
    "neco": NECOScorer,
}


def build_scorer(name: str, **kwargs) -> Scorer:
    """Instantiate the scorer registered as `name` with its options, e.g. build_scorer("knn", k=10)."""
    if name not in SCORERS:
        raise ValueError(f"unknown OOD scorer {name!r}; valid names: {', '.join(SCORERS)}")
    cls = SCORERS[name]
    signature = inspect.signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError:
        options = ", ".join(signature.parameters) or "none"
        raise ValueError(f"OOD scorer {name!r} got options {sorted(kwargs)}; its options are: {options}") from None
    return cls(**kwargs)
