"""The interface every OOD scorer shares, and the input checks they all use.

A scorer is fitted once on in-distribution (ID) training features and then scores any
number of feature batches, sklearn style:

    scorer.fit(train_features, train_labels, weight=None, bias=None)   -> the scorer
    scorer.score(features, logits=None)                                -> Tensor[N]

* Higher score = more in-distribution, for every scorer.
* Scores are float64, on the device of the input they are computed from (`logits` when a
  logit-based scorer is given them, else `features`). Fitted statistics are moved to that
  device when it differs from the one they were fitted on.
* `weight` (C x D) and `bias` (C) are the linear classifier on the features; a missing bias
  is zero. Logit-based scorers use `logits` when given, else logits = features @ W^T + b.

Every scorer class declares what a search and an evaluation need to know about it:

* `search_space` - option name -> the values OpenOOD v1.5 sweeps (its `postprocessor_sweep`),
  `{}` when it sweeps nothing; `ood.registry.search_candidates` expands it.
* `fit_split` - "train" or "val": the ID split OpenOOD fits the scorer on (ReAct's and VRA's
  percentiles and KLM's templates come from the ID validation split, the rest from training).
* `uses_classifier` - whether the score reads the classifier W, b (or the logits they give).

Fitting on degenerate features (all rows identical, or for label-using scorers every row equal
to the others of its class) warns once (UserWarning): such statistics often give constant scores.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod

import torch


def check_features(features: torch.Tensor, name: str = "features") -> torch.Tensor:
    """Return `features` after checking it is a non-empty, finite, floating N x D tensor."""
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, D), got {type(features).__name__}")
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N, D >= 1, got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {features.dtype}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or inf values; remove or repair those rows before scoring")
    return features


def check_labels(labels: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Return `labels` after checking it is a 1-D integer tensor with one label per sample."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
        raise ValueError("train_labels must be a 1-D torch.Tensor with one class index per training sample")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"train_labels must hold integer class indices, got {labels.dtype}")
    if labels.shape[0] != num_samples:
        raise ValueError(f"train_labels has {labels.shape[0]} entries but train_features has {num_samples} rows")
    return labels


def check_classifier(weight: torch.Tensor | None, bias: torch.Tensor | None,
                     dim: int | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Return (W, b) as float64 tensors (b = 0 when only W is given) or (None, None).

    `dim` is the feature dimension W must match (None: not checked).
    """
    if weight is None:
        if bias is not None:
            raise ValueError("bias was given without weight; pass the classifier weight (C x D) as well")
        return None, None
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ValueError("weight must be the classifier's (C x D) weight tensor")
    if dim is not None and weight.shape[1] != dim:
        raise ValueError(f"weight has {weight.shape[1]} columns but the features have dimension {dim}")
    weight = weight.detach().to(torch.float64)
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=torch.float64, device=weight.device)
    elif not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be a tensor of shape ({weight.shape[0]},) to match weight")
    bias = bias.detach().to(device=weight.device, dtype=torch.float64)
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise ValueError("weight or bias contains NaN or inf values")
    return weight, bias


def check_batch_size(scorer: str, batch_size: int) -> int:
    """``batch_size`` (rows scored at a time) as an int >= 1; a ValueError naming the scorer otherwise."""
    if batch_size < 1:
        raise ValueError(f"{scorer} batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


class Scorer(ABC):
    """Base class: holds the classifier, validates inputs, turns features into logits.

    Subclasses implement `_score(features, logits)` returning float64 scores and, when they fit
    statistics, `_fit(features, labels)` (features: checked N x D tensor or None, labels: checked
    labels or None);
    `needs_train_features` / `needs_train_labels` say what `fit` requires.
    """

    needs_train_features = True
    needs_train_labels = True
    needs_classifier = False            # fit refuses to run without weight=W
    search_space: dict[str, list] = {}  # every concrete scorer declares these three itself
    fit_split = "train"
    uses_classifier = True

    def __init__(self) -> None:
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.dim: int | None = None
        self.fitted = False

    def fit(self, train_features: torch.Tensor | None, train_labels: torch.Tensor | None,
            weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> "Scorer":
        """Fit on ID training features (N x D) and labels (N); returns self."""
        name = type(self).__name__
        self.dim = None
        features = labels = None
        if train_features is not None:
            features = check_features(train_features, "train_features").detach()
            self.dim = features.shape[1]
            if train_labels is not None:
                labels = check_labels(train_labels, features.shape[0]).detach().to(features.device)
        if self.needs_train_features and features is None:
            raise ValueError(f"{name}.fit needs train_features (N x D)")
        if self.needs_train_labels and labels is None:
            raise ValueError(f"{name}.fit needs train_labels (N), one class index per training sample")
        self.weight, self.bias = check_classifier(weight, bias, self.dim)
        if self.needs_classifier and self.weight is None:
            raise ValueError(f"{self.name} needs the classifier: fit(train_features, train_labels, weight=W, bias=b)")
        if self.weight is not None:
            self.dim = self.weight.shape[1]
        if features is not None and self.needs_train_features:
            reason = degenerate_fit(features, labels if self.needs_train_labels else None)
            if reason:
                warnings.warn(f"{self.name}: {reason}; its fitted statistics are degenerate and its scores "
                              "may be constant", UserWarning, stacklevel=2)
        self._fit(features, labels)
        self.fitted = True
        return self

    def score(self, features: torch.Tensor | None, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Score N samples; returns a float64 Tensor[N], higher = more in-distribution."""
        self.require_fitted()
        if features is not None:
            features = self.check_scoring_features(features)
        if logits is not None:
            logits = check_features(logits, "logits").detach()
            if features is not None and logits.shape[0] != features.shape[0]:
                raise ValueError(f"logits has {logits.shape[0]} rows but features has {features.shape[0]}")
            if self.weight is not None and logits.shape[1] != self.weight.shape[0]:
                raise ValueError(f"logits has {logits.shape[1]} columns but the classifier has {self.weight.shape[0]} classes")
        if features is None and logits is None:
            raise ValueError("score needs features (N x D), logits (N x C) or both")
        return self._score(features, logits)

    @property
    def name(self) -> str:
        """The registry name: the class name without `Scorer`, lower case (KNNScorer -> knn)."""
        return type(self).__name__.removesuffix("Scorer").lower()

    def require_fitted(self) -> None:
        """Raise a clear error when `fit` has not been called."""
        if not self.fitted:
            raise ValueError(f"{type(self).__name__} is not fitted; call .fit(train_features, train_labels, ...) first")

    def check_scoring_features(self, features: torch.Tensor) -> torch.Tensor:
        """Check the scorer is fitted and `features` is a finite N x D tensor of the fitted D."""
        self.require_fitted()
        features = check_features(features).detach()
        if self.dim is not None and features.shape[1] != self.dim:
            raise ValueError(f"features have dimension {features.shape[1]} but the scorer was fitted on dimension {self.dim}")
        return features

    def logits_of(self, features: torch.Tensor | None, logits: torch.Tensor | None) -> torch.Tensor:
        """Float64 logits: `logits` if given, else features @ W^T + b with the fitted classifier."""
        if logits is not None:
            return logits.to(torch.float64)
        if features is None or self.weight is None:
            raise ValueError(f"{type(self).__name__} needs logits: pass logits=... to score, "
                             "or fit with weight=... (and bias=...) and pass features")
        weight = self.weight.to(features.device)
        bias = self.bias.to(features.device)
        return torch.addmm(bias, features.to(torch.float64), weight.T)

    def _fit(self, features: torch.Tensor | None, labels: torch.Tensor | None) -> None:
        """Compute the fitted statistics from checked training features and labels (default: none)."""

    @abstractmethod
    def _score(self, features: torch.Tensor | None, logits: torch.Tensor | None) -> torch.Tensor:
        """Return float64 scores for checked features and/or logits."""


def degenerate_fit(features: torch.Tensor, labels: torch.Tensor | None) -> str | None:
    """Why fitting on `features` (and `labels`) is degenerate, or None: all rows identical, or
    (with labels) every row bitwise equal to the first row of its class."""
    if (features == features[0]).all():
        return f"all {features.shape[0]} training feature rows are identical"
    if labels is None:
        return None
    _, inverse = torch.unique(labels, return_inverse=True)
    rows = torch.arange(labels.shape[0], device=labels.device)
    first = torch.full((int(inverse.max()) + 1,), labels.shape[0], device=labels.device, dtype=rows.dtype)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")
    if (features == features[first[inverse]]).all():
        return "every training feature row equals the others of its class (zero within-class spread)"
    return None


def require_features(scorer: Scorer, features: torch.Tensor | None) -> torch.Tensor:
    """Return `features`, or raise a clear error for a feature-based scorer given only logits."""
    if features is None:
        raise ValueError(f"{type(scorer).__name__} scores features: pass features (N x D) to score")
    return features
