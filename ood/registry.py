"""The one registry of OOD scorers: names -> classes, their options, command-line specs and search grids.

Order of `SCORERS`: the project's original eight (logit scorers, then feature-density, neighbour
and subspace scorers), then OpenOOD v1.5's post-hoc zoo: activation shaping (react, ash, scale,
dice), probability scorers (gen, klm), feature statistics (rmds, she), training-set relations
(relation, nnguide), the clipped band (vra), decision-boundary geometry (fdbd, nci), gradients
(gradnorm).

    build_scorer("ash", percentile=65)
    parse_scorer_spec("gen:gamma=0.1,M=50")  -> ("gen", {"gamma": 0.1, "M": 50})
    search_candidates("react")               -> [{"percentile": 90}, {"percentile": 85}, ...]
"""
from __future__ import annotations

import inspect
import itertools

from ood.activation import ASHScorer, DICEScorer, ReActScorer, SCALEScorer, VRAScorer
from ood.base import Scorer
from ood.boundary import FDBDScorer, NCIScorer
from ood.density import GMMScorer, MahalanobisScorer, RMDSScorer
from ood.logit_scorers import EnergyScorer, MaxLogitScorer, MSPScorer
from ood.neighbors import KNNScorer
from ood.probability import GENScorer, GradNormScorer, KLMScorer
from ood.relation import NNGuideScorer, RelationScorer, SHEScorer
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
    "react": ReActScorer,
    "ash": ASHScorer,
    "scale": SCALEScorer,
    "dice": DICEScorer,
    "gen": GENScorer,
    "klm": KLMScorer,
    "rmds": RMDSScorer,
    "she": SHEScorer,
    "relation": RelationScorer,
    "nnguide": NNGuideScorer,
    "vra": VRAScorer,
    "fdbd": FDBDScorer,
    "nci": NCIScorer,
    "gradnorm": GradNormScorer,
}


def scorer_class(name: str) -> type[Scorer]:
    """The class registered as `name`; a one-line ValueError listing the valid names otherwise."""
    if name not in SCORERS:
        raise ValueError(f"unknown OOD scorer {name!r}; valid names: {', '.join(SCORERS)}")
    return SCORERS[name]


def scorer_options(name: str) -> dict:
    """Option name -> default of scorer `name` (its constructor's keywords, OpenOOD's names first)."""
    return {p.name: p.default for p in inspect.signature(scorer_class(name)).parameters.values()}


def canonical_options(name: str, options: dict) -> dict:
    """`options` with aliases replaced by their option names (knn's k -> K); unknown names raise."""
    cls, valid = scorer_class(name), scorer_options(name)
    aliases = getattr(cls, "option_aliases", {})
    out = {}
    for key, value in options.items():
        key = aliases.get(key, key)
        if key not in valid:
            raise ValueError(f"OOD scorer {name!r} has no option {key!r}; its options are: "
                             f"{', '.join(valid) or 'none'}")
        out[key] = value
    return out


def build_scorer(name: str, **kwargs) -> Scorer:
    """Instantiate the scorer registered as `name` with its options, e.g. build_scorer("knn", K=10)."""
    return scorer_class(name)(**canonical_options(name, kwargs))


def _convert(name: str, key: str, text: str, default):
    """`text` as the type of the option's default (bool from true/false; a None default: none,
    an int, a float, else the text)."""
    kind = type(default)
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if default is None:
            if text.lower() == "none":
                return None
            for parse in (int, float):
                try:
                    return parse(text)
                except ValueError:
                    pass
            return text
        return kind(text)
    except ValueError:
        expected = "true or false" if kind is bool else f"{'an' if kind is int else 'a'} {kind.__name__}"
        raise ValueError(f"OOD scorer {name!r} option {key} expects {expected}, got {text!r}") from None


def parse_scorer_spec(text: str) -> tuple[str, dict]:
    """`name[:option=value,...]` (e.g. `ash:percentile=65`, `fdbd:distance_as_normalizer=false`)
    -> (name, options), each value converted to the type of the option's default."""
    name, _, rest = text.strip().partition(":")
    defaults = scorer_options(name)
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise ValueError(f"OOD scorer spec {text!r}: {item!r} is not option=value")
        key = next(iter(canonical_options(name, {key: None})))
        options[key] = _convert(name, key, value, defaults[key])
    return name, options


def search_candidates(name: str) -> list[dict]:
    """Every combination of scorer `name`'s `search_space` (OpenOOD's sweep), as option dicts for
    `build_scorer`: the default options first, then the grid in OpenOOD's order (its first option
    varying fastest). `[{}]` for a scorer without a search space. A candidate a layer cannot take
    (e.g. vim's dim 1000 on 512-d features) raises its ValueError at fit."""
    space = scorer_class(name).search_space
    defaults = scorer_options(name)
    keys = list(space)
    default = {key: defaults[key] for key in keys}
    grid = [dict(zip(reversed(keys), values)) for values in itertools.product(*(space[k] for k in reversed(keys)))]
    return [default] + [{key: c[key] for key in keys} for c in grid if c != default]
