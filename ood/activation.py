"""Activation shaping: the energy of the classifier applied to a reshaped feature (or weight).

Every scorer here computes logits g = W' s(h) + b from the features h with the classifier given at
`fit` (W, b; the shaped layer has to be recomputed, so `logits` passed to `score` are not used)
and scores their energy, logsumexp_c g_c (temperature 1, as OpenOOD). They differ in the shaping:
a clip of the activations (ReAct, VRA), a per-sample pruning (ASH, SCALE) or a mask on the weight
(DICE). Percentiles are numpy's linear percentile over all entries of the fitted features (one
threshold for the whole layer, never one per unit), as OpenOOD computes them.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ood.base import Scorer, require_features


def linear_percentile(values: torch.Tensor, q):
    """numpy's linear percentile(s) `q` (0-100) over every entry of `values` (float64)."""
    return np.percentile(values.detach().to("cpu", torch.float64).numpy().ravel(), q)


def check_percentile(scorer: str, option: str, value: float) -> float:
    """`value` as a float in [0, 100]; a ValueError naming the scorer's option otherwise."""
    if not 0 <= value <= 100:
        raise ValueError(f"{scorer} {option} must be in [0, 100], got {value}")
    return float(value)


def kept_units(scorer: str, dim: int, percentile: float) -> int:
    """ASH's and SCALE's number of kept units k = D - round(D p / 100) (round half to even, as
    numpy's round in the official code); a ValueError when no unit is kept."""
    k = dim - round(dim * percentile / 100.0)
    if k < 1:
        raise ValueError(f"{scorer} percentile {percentile:g} keeps no unit of the {dim}-d features "
                         f"(k = D - round(D p / 100) = {k}); use a lower percentile")
    return k


class _ShapedEnergy(Scorer):
    """Base: score = logsumexp_c (W' s(h) + b)_c for a shaping s (and weight W') of the subclass."""

    needs_train_labels = False
    needs_classifier = True
    uses_classifier = True

    def __init__(self, **percentiles: float) -> None:
        """Store each percentile option (name=value) after checking it lies in [0, 100]."""
        super().__init__()
        for option, value in percentiles.items():
            setattr(self, option, check_percentile(self.name, option, value))

    def _shaped_logits(self, x: torch.Tensor) -> torch.Tensor:
        """W s(x) + b for float64 features x (N x D), s = the subclass's `_shape`."""
        weight, bias = self.weight.to(x.device), self.bias.to(x.device)
        return torch.addmm(bias, self._shape(x), weight.T)

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, features, logits):
        x = require_features(self, features).to(torch.float64)
        return torch.logsumexp(self._shaped_logits(x), dim=1)


class ReActScorer(_ShapedEnergy):
    """ReAct: rectified activations, then energy.

        t = percentile_p of all N x D fitted activations (numpy, linear), p = `percentile`
        score(h) = logsumexp_c (W min(h, t) + b)_c

    Sun, Guo & Li, "ReAct: Out-of-distribution Detection With Rectified Activations", NeurIPS 2021.
    OpenOOD v1.5 `react`: `percentile` 90, swept over [85, 90, 95, 99]; the threshold is taken on
    the ID validation split (`fit_split = "val"`). Only an upper clip, as in the paper and OpenOOD.
    Warns when t is the smallest fitted activation (then every activation at or above it clips to
    t, e.g. post-ReLU features with more than p% zeros, and such samples all score the same).
    """

    search_space = {"percentile": [85, 90, 95, 99]}
    fit_split = "val"
    uses_classifier = True

    def __init__(self, percentile: int = 90) -> None:
        super().__init__(percentile=percentile)

    def _fit(self, features, labels):
        self.threshold = float(linear_percentile(features, self.percentile))
        if self.threshold <= features.min().item():
            warnings.warn(f"react: the {self.percentile:g}th percentile of the fitted activations, "
                          f"{self.threshold:g}, is also their minimum, so every activation clips to it; "
                          "raise the percentile", UserWarning, stacklevel=3)

    def _shape(self, x):
        return x.clamp(max=self.threshold)


class VRAScorer(_ShapedEnergy):
    """VRA as OpenOOD v1.5 implements it: activations clipped to a band, then energy.

        t_low, t_high = percentiles `percentile_low`, `percentile_high` of all fitted activations
        score(h) = logsumexp_c (W clip(h, t_low, t_high) + b)_c

    Xu, Lian, Liu & Tao, "VRA: Variational Rectified Activation for Out-of-distribution
    Detection", NeurIPS 2023. The paper's operator also suppresses the activations below the low
    threshold and amplifies those between the thresholds; OpenOOD's `vra` (followed here) only clips.
    OpenOOD v1.5 `vra`: `percentile_high` 90, `percentile_low` 10, swept over [85, 90, 95, 99] x
    [1, 5, 10, 15]; thresholds from the ID validation split (`fit_split = "val"`). Warns when the
    two thresholds are equal (every activation clips to one value: constant scores).
    """

    search_space = {"percentile_high": [85, 90, 95, 99], "percentile_low": [1, 5, 10, 15]}
    fit_split = "val"
    uses_classifier = True

    def __init__(self, percentile_high: int = 90, percentile_low: int = 10) -> None:
        super().__init__(percentile_high=percentile_high, percentile_low=percentile_low)
        if self.percentile_low > self.percentile_high:
            raise ValueError(f"vra percentile_low ({percentile_low}) must not exceed percentile_high ({percentile_high})")

    def _fit(self, features, labels):
        low, high = linear_percentile(features, [self.percentile_low, self.percentile_high])
        self.threshold_low, self.threshold_high = float(low), float(high)
        if self.threshold_low == self.threshold_high:
            warnings.warn(f"vra: the {self.percentile_low:g}th and {self.percentile_high:g}th percentiles of the "
                          f"fitted activations are both {self.threshold_low:g}, so every activation clips to that "
                          "value and all scores are equal; widen the percentiles", UserWarning, stacklevel=3)

    def _shape(self, x):
        return x.clamp(min=self.threshold_low, max=self.threshold_high)


class _TopUnits(_ShapedEnergy):
    """Base of ASH and SCALE: they act on the k = D - round(D p / 100) largest units of each sample,
    and share OpenOOD's sweep of the percentile; they fit nothing but the classifier."""

    needs_train_features = False
    search_space = {"percentile": [65, 70, 75, 80, 85, 90, 95]}
    fit_split = "train"
    uses_classifier = True

    def _fit(self, features, labels):
        self.k = kept_units(self.name, self.dim, self.percentile)


class ASHScorer(_TopUnits):
    """ASH-B: activation shaping by binarizing the largest units, then energy.

        k = D - round(D p / 100),  p = `percentile`
        s(h)_j = sum_i h_i / k  for the k largest units j of h, else 0
        score(h) = logsumexp_c (W s(h) + b)_c

    Djurisic, Bozanic, Ashok & Liu, "Extremely Simple Activation Shaping for Out-of-Distribution
    Detection", ICLR 2023. Applied, as OpenOOD does, to the pooled feature vector (the paper shapes
    the feature map before pooling). Ties among the k-th largest units are broken as `torch.topk`.
    OpenOOD v1.5 `ash`: `percentile` 90, swept over [65, 70, 75, 80, 85, 90, 95]; fits nothing
    but the classifier. A percentile that keeps no unit (k < 1) is refused.
    """

    def __init__(self, percentile: int = 90) -> None:
        super().__init__(percentile=percentile)

    def _shape(self, x):
        top = x.topk(self.k, dim=1).indices
        fill = (x.sum(dim=1, keepdim=True) / self.k).expand(-1, self.k)
        return torch.zeros_like(x).scatter_(1, top, fill)


class SCALEScorer(_TopUnits):
    """SCALE: the logits scaled by the share of the activation mass in the top units, then energy.

        k = D - round(D p / 100),  p = `percentile`
        r(h) = sum_i h_i / sum of the k largest h_i
        score(h) = logsumexp_c (exp(r(h)) (W h)_c + b_c)       (the bias is not scaled)

    Xu, Chen, Franchi & Yao, "Scaling for Training Time and Post-hoc Out-of-distribution
    Detection Enhancement", ICLR 2024. Applied to the pooled features as in OpenOOD.
    OpenOOD v1.5 `scale`: `percentile` 85, swept over [65, 70, 75, 80, 85, 90, 95]; fits nothing
    but the classifier. r is undefined when the top-k sum is not positive (all-zero or negative
    activations: SCALE needs post-ReLU features); such rows are refused with a ValueError.
    """

    def __init__(self, percentile: int = 85) -> None:
        super().__init__(percentile=percentile)

    def _shaped_logits(self, x):
        top_sum = x.topk(self.k, dim=1).values.sum(dim=1)
        bad = int((top_sum <= 0).sum())
        if bad:
            raise ValueError(f"scale: {bad} of {x.shape[0]} rows have a non-positive sum of their top {self.k} "
                             "activations, where SCALE's ratio is undefined; SCALE needs non-negative (post-ReLU) "
                             "features that are not all zero")
        ratio = x.sum(dim=1) / top_sum
        weight, bias = self.weight.to(x.device), self.bias.to(x.device)
        return torch.addmm(bias, x * ratio.exp()[:, None], weight.T)


class DICEScorer(_ShapedEnergy):
    """DICE: directed sparsification of the classifier weight, then energy.

        m = mean of the fitted features (D),  V_cj = m_j W_cj (contributions, C x D)
        M_cj = 1 if V_cj > percentile_p of all C x D entries of V (strict), else 0,  p = `p`
        score(h) = logsumexp_c ((M * W) h + b)_c

    Sun & Li, "DICE: Leveraging Sparsification for Out-of-Distribution Detection", ECCV 2022.
    OpenOOD v1.5 `dice`: `p` 90, sweep grid [90] (OpenOOD does not search it); the mean comes
    from the training split. A mask that keeps no weight (p = 100, or all contributions equal) is
    refused: the scores would be the constant logsumexp(b).
    """

    search_space = {"p": [90]}
    fit_split = "train"
    uses_classifier = True

    def __init__(self, p: int = 90) -> None:
        super().__init__(p=p)

    def _fit(self, features, labels):
        weight = self.weight.to(features.device)
        contribution = features.to(torch.float64).mean(dim=0) * weight
        self.threshold = float(linear_percentile(contribution, self.p))
        mask = contribution > self.threshold
        if not mask.any():
            raise ValueError(f"dice: no weight contribution exceeds its {self.p:g}th percentile "
                             f"({self.threshold:g}), so the mask would remove every weight; lower p")
        self.masked_weight = weight * mask

    def _shaped_logits(self, x):
        weight, bias = self.masked_weight.to(x.device), self.bias.to(x.device)
        return torch.addmm(bias, x, weight.T)
