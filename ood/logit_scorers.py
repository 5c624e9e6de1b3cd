"""Scorers that read only the classifier's logits f(x) = W h + b (C values per sample).

Each uses the `logits` passed to `score` when given, else computes them in float64 from the
features with the weight and bias given at `fit` (so `fit(None, None, weight=W, bias=b)` is
enough). Training features are not needed.
"""
from __future__ import annotations

import torch

from ood.base import Scorer


class MSPScorer(Scorer):
    """Maximum softmax probability.

        score(x) = max_c softmax(f(x))_c

    Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
    Examples in Neural Networks", ICLR 2017. Computed in float64, which delays (but cannot
    prevent) saturation at 1.0 for confident samples; ties at 1.0 are handled by the
    metrics' tie convention (see `ood.metrics`).
    OpenOOD v1.5 `msp`: no options, no search; fits nothing.
    """

    needs_train_features = needs_train_labels = False
    search_space = {}
    fit_split = "train"
    uses_classifier = True

    def _score(self, features, logits):
        return torch.softmax(self.logits_of(features, logits), dim=1).amax(dim=1)


class MaxLogitScorer(Scorer):
    """Maximum logit.

        score(x) = max_c f(x)_c

    Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling
    Out-of-Distribution Detection for Real-World Settings", ICML 2022.
    OpenOOD v1.5 `mls`: no options, no search; fits nothing.
    """

    needs_train_features = needs_train_labels = False
    search_space = {}
    fit_split = "train"
    uses_classifier = True

    def _score(self, features, logits):
        return self.logits_of(features, logits).amax(dim=1)


class EnergyScorer(Scorer):
    """Negative free energy.

        score(x) = T * logsumexp_c (f(x)_c / T)      (= -E(x; f) in the paper), T = `temperature`

    Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020.
    T = 1 (the default) is the score the ICML 2025 neural-collapse paper reports.
    OpenOOD v1.5 `ebo`: `temperature` 1, swept over [1]; fits nothing.
    """

    needs_train_features = needs_train_labels = False
    search_space = {"temperature": [1.0]}
    fit_split = "train"
    uses_classifier = True

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"energy temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def _score(self, features, logits):
        t = self.temperature
        return t * torch.logsumexp(self.logits_of(features, logits) / t, dim=1)
