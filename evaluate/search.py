"""OpenOOD v1.5's automatic parameter search, on cached features.

For each model, layer and scorer (``eval_ood.py --search --val_ood SPEC ...``):

1. the ID training split is cut, stratified by class and drawn by ``--seed``, into a training part
   and an ID validation part (``--val_fraction``); the layer's probe is trained on the training part;
2. every candidate of the scorer's search space (its ``search_space``, OpenOOD's sweep grid; the
   default options first) is built afresh and fitted on the training part, or on the validation
   part for the scorers OpenOOD fits there (``fit_split == "val"``: ReAct's and VRA's percentiles,
   KLM's templates), with the same classifier;
3. each candidate scores the ID validation part and the validation OOD set(s) (``--val_ood``,
   scored on their ``val`` split, else ``train``); the candidate with the highest AUROC (averaged
   over the validation OOD sets; ties: the earlier candidate) is chosen.

The test OOD sets are not read before every choice is made. The search table lists every
candidate's validation figures; the evaluation then reports, on the test sets, the chosen
options (``search = chosen``) and, beside them, the untuned defaults (``search = default``), both
fitted as in the search. Everything reads the feature cache: nothing is extracted twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from core.errors import UserError
from data import stratified_split
from ood import SCORERS, build_scorer, detection_metrics
from ood.registry import parse_scorer_spec, search_candidates


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer with its options as the command line gives them (``ash:percentile=65``)."""
    name: str
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "ScorerSpec":
        try:
            name, options = parse_scorer_spec(text)
        except ValueError as exc:
            raise UserError(f"--scorers {text}: {exc}") from None
        return cls(name, dict(options))

    @property
    def label(self) -> str:
        """The name, with the options given when there are any (``ash:percentile=65``)."""
        return self.name + (f":{self.options_text}" if self.options else "")

    @property
    def options_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.options.items())

    @property
    def fit_split(self) -> str:
        return getattr(SCORERS[self.name], "fit_split", "train")

    @property
    def uses_classifier(self) -> bool:
        return bool(getattr(SCORERS[self.name], "uses_classifier", True))

    def build(self):
        return build_scorer(self.name, **self.options)

    def candidates(self) -> list["ScorerSpec"]:
        """The search space of the scorer (the given options fixed), the defaults first."""
        out = []
        for options in search_candidates(self.name):
            merged = {**options, **self.options}
            if all(merged != c.options for c in out):
                out.append(ScorerSpec(self.name, merged))
        return out


def split_for_search(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training-part indices, ID validation indices) of the ID training split, stratified by class."""
    try:
        fit_idx, val_idx = stratified_split(labels.numpy(), fraction, seed)
    except ValueError as exc:
        raise UserError(f"--val_fraction {fraction}: cannot hold out an ID validation part ({exc})") from None
    return torch.as_tensor(fit_idx, dtype=torch.long), torch.as_tensor(val_idx, dtype=torch.long)


SEARCH_COLUMNS = ["model", "layer", "scorer", "options", "val_auroc", "val_fpr95", "chosen", "note"]


def search_rows_columns() -> list[str]:
    return list(SEARCH_COLUMNS)


def search_layer(model: str, fit, scorers: list[ScorerSpec], vals: dict, score: Callable) -> tuple[list[dict], list]:
    """Every candidate of every scorer on one layer's fit data (``fit``, an ``evaluate.ood.LayerFit``),
    scored by ``score(spec, fit, sets)`` on the ID validation part and the validation OOD features
    (``vals``: label -> FeatureSet); returns the search rows and, per scorer, ``[(chosen, "chosen"),
    (defaults, "default")]``."""
    sets = {"id": fit.val, **{label: fs[fit.layer] for label, fs in vals.items()}}
    rows, chosen = [], []
    for scorer in scorers:
        candidates = scorer.candidates()
        figures = []
        for candidate in candidates:
            row = {"model": model, "layer": fit.layer, "scorer": scorer.name, "options": candidate.options_text}
            try:
                scores = score(candidate, fit, sets)
            except ValueError as exc:
                rows.append({**row, "val_auroc": None, "val_fpr95": None, "chosen": False, "note": str(exc)})
                figures.append(-np.inf)
                continue
            id_scores = scores.pop("id")
            metrics = [detection_metrics(id_scores, s) for s in scores.values()]
            auroc = float(np.mean([m["auroc"] for m in metrics]))
            rows.append({**row, "val_auroc": auroc, "val_fpr95": float(np.mean([m["fpr95"] for m in metrics])),
                         "chosen": False})
            figures.append(auroc)
        best = int(np.argmax(figures))  # the first of equal figures
        rows[len(rows) - len(candidates) + best]["chosen"] = True
        chosen += [(candidates[best], "chosen"), (candidates[0], "default")]
    return rows, chosen
