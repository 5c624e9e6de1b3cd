"""Scorers that relate a sample to stored ID training samples or class patterns:
Relation (a similarity graph to the training set), NNGuide (energy guided by nearest training
neighbours) and SHE (the stored pattern of the predicted class).

All need the classifier given at `fit` (their training statistics read its predictions or
logits); at `score` the logits come from `logits` when given, else from the features (float64).
Similarities to the training bank are computed `batch_size` test rows at a time, so no
N_test x N_train matrix is built.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ood.base import Scorer, check_batch_size, require_features
from ood.neighbors import l2_normalize


def relation_normalize(features: torch.Tensor) -> torch.Tensor:
    """h / sqrt(||h||^2 + 1e-10) row-wise (the Relation code's normalization), float64."""
    x = features.to(torch.float64)
    return x / (x.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()


class RelationScorer(Scorer):
    """Relation: the summed strength of a sample's edges to the training set in a relation graph.

        z = h / sqrt(||h||^2 + 1e-10),  p = softmax(f(h))   (and z_i, p_i for the fitted samples)
        r_i(h) = max(0, z . z_i) * (p . p_i)
        score(h) = sum_i r_i(h)^pow over the fitted samples with r_i(h) > 0.03,   pow = `pow`

    Kim, Yun & Song, "Neural Relation Graph: A Unified Framework for Identifying Label Noise and
    Outlier Data", NeurIPS 2023. OpenOOD v1.5 `relation`: `pow` 1, swept over [1, 2, 4, 6, 8];
    fitted on the training split (every training sample is a node). The edge threshold 0.03 is
    the official code's default. Cost: one (batch x N_train) similarity table per test batch.
    """

    needs_train_labels = False
    needs_classifier = True
    search_space = {"pow": [1, 2, 4, 6, 8]}
    fit_split = "train"
    uses_classifier = True
    edge_threshold = 0.03

    def __init__(self, pow: int = 1, batch_size: int = 256) -> None:  # noqa: A002 (OpenOOD's name)
        super().__init__()
        if not pow > 0:
            raise ValueError(f"relation pow must be > 0, got {pow}")
        self.pow = pow
        self.batch_size = check_batch_size("relation", batch_size)

    def _fit(self, features, labels):
        self.bank = relation_normalize(features)
        self.bank_probs = torch.softmax(self.logits_of(features, None), dim=1)

    def _score(self, features, logits):
        features = require_features(self, features)
        probs = torch.softmax(self.logits_of(features, logits), dim=1).to(features.device)
        bank, bank_probs = self.bank.to(features.device), self.bank_probs.to(features.device)
        scores = []
        for rows, row_probs in zip(features.split(self.batch_size), probs.split(self.batch_size)):
            edges = (relation_normalize(rows) @ bank.T).clamp_(min=0.0)
            edges.mul_(row_probs @ bank_probs.T)
            edges.masked_fill_(edges <= self.edge_threshold, 0.0)
            scores.append(edges.pow_(self.pow).sum(dim=1))
        return torch.cat(scores)


class NNGuideScorer(Scorer):
    """NNGuide: the energy, guided by the similarity to energy-weighted training neighbours.

        bank = the first n fitted rows, n = int(alpha N) + 1 (<= N),   alpha = `alpha`
        g_i = E(b_i) b_i / ||b_i||  for each bank row b_i,   E(h) = logsumexp_c f(h)_c
        score(h) = E(h) * mean of the K largest (h / ||h||) . g_i,   K = `K` (<= n)

    Park, Jung & Teoh, "Nearest Neighbor Guidance for Out-of-Distribution Detection", ICCV 2023.
    OpenOOD v1.5 `nnguide`: `K` 100, `alpha` 0.01, sweep grid K [100] x alpha [0.01] (OpenOOD does
    not search it); fitted on the training split. OpenOOD takes whole batches from the start of its
    unshuffled training loader until it holds more than int(alpha N) rows (e.g. 600 rows at its
    batch size 200 for N = 50,000); n above is that rule at batch size 1. The bank is the start of
    the fitted features, so they should come in shuffled order: with labels, a warning says when
    the bank holds fewer than half the classes it could (features sorted by class). OpenOOD's
    normalizer adds 1e-10 to every entry after dividing by the norm (x / ||x|| + 1e-10); here
    x / (||x|| + 1e-10), as `knn` (a difference of order 1e-10).
    """

    needs_train_labels = False
    needs_classifier = True
    search_space = {"K": [100], "alpha": [0.01]}
    fit_split = "train"
    uses_classifier = True

    def __init__(self, K: int = 100, alpha: float = 0.01, batch_size: int = 1024) -> None:  # noqa: N803
        super().__init__()
        if K < 1:
            raise ValueError(f"nnguide K must be >= 1, got {K}")
        if not 0 < alpha <= 1:
            raise ValueError(f"nnguide alpha must be in (0, 1], got {alpha}")
        self.K, self.alpha = int(K), float(alpha)
        self.batch_size = check_batch_size("nnguide", batch_size)

    def _fit(self, features, labels):
        size = min(features.shape[0], int(self.alpha * features.shape[0]) + 1)
        bank = features[:size].to(torch.float64)
        energy = torch.logsumexp(self.logits_of(bank, None), dim=1)
        self.guide = l2_normalize(bank) * energy[:, None]
        if labels is not None:
            held, present = labels[:size].unique().numel(), labels.unique().numel()
            if held < min(size, present) / 2:  # a random bank of `size` rows would hold most classes
                warnings.warn(f"nnguide: its bank (the first {size} fitted rows) holds {held} of the {present} "
                              "classes (the features look sorted by class); pass them in shuffled order",
                              UserWarning, stacklevel=3)

    def _score(self, features, logits):
        features = require_features(self, features)
        energy = torch.logsumexp(self.logits_of(features, logits), dim=1).to(features.device)
        guide = self.guide.to(features.device)
        k = min(self.K, guide.shape[0])
        guidance = torch.cat([(l2_normalize(rows.to(torch.float64)) @ guide.T).topk(k, dim=1).values.mean(dim=1)
                              for rows in features.split(self.batch_size)])
        return guidance * energy


class SHEScorer(Scorer):
    """SHE: similarity to the stored pattern of the predicted class.

        m_c = mean of the fitted features labelled c and predicted c (argmax_c' f(h)_c' = c)
        pred = argmax_c f(h)_c
        score(h) = h . m_pred          (metric inner_product; -||h - m_pred|| for euclidean,
                                        cos(h, m_pred) for cosine)

    Zhang, Fu, Chen, Du, Li, Wang, Liu, Han & Zhang, "Out-of-Distribution Detection based On In-Distribution
    Data Patterns Memorization with Modern Hopfield Energy", ICLR 2023. OpenOOD v1.5 `she`:
    `metric` inner_product, no search; patterns from the training split. A class (classifier row)
    with no training sample both labelled and predicted as it has no pattern (OpenOOD would score
    its samples NaN): such a fit is refused with a ValueError.
    """

    needs_classifier = True
    search_space = {}
    fit_split = "train"
    uses_classifier = True
    metrics = ("inner_product", "euclidean", "cosine")

    def __init__(self, metric: str = "inner_product") -> None:
        super().__init__()
        if metric not in self.metrics:
            raise ValueError(f"she metric must be one of {', '.join(self.metrics)}, got {metric!r}")
        self.metric = metric

    def _fit(self, features, labels):
        num_classes = self.weight.shape[0]
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"she: train_labels must lie in [0, {num_classes - 1}] (the classifier's classes), "
                             f"got [{int(labels.min())}, {int(labels.max())}]")
        x = features.to(torch.float64)
        correct = self.logits_of(features, None).argmax(dim=1) == labels
        counts = torch.bincount(labels[correct], minlength=num_classes)
        if (counts == 0).any():
            missing = (counts == 0).nonzero().flatten().tolist()
            raise ValueError(f"she: class(es) {', '.join(map(str, missing[:10]))}{' ...' if len(missing) > 10 else ''} "
                             "have no training sample labelled and predicted as themselves, so SHE has no pattern "
                             "for them")
        sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=x.device)
        self.patterns = sums.index_add_(0, labels[correct], x[correct]) / counts[:, None]

    def _score(self, features, logits):
        x = require_features(self, features).to(torch.float64)
        pattern = self.patterns.to(x.device)[self.logits_of(features, logits).argmax(dim=1).to(x.device)]
        if self.metric == "inner_product":
            return (x * pattern).sum(dim=1)
        if self.metric == "euclidean":
            return -torch.linalg.vector_norm(x - pattern, dim=1)
        return F.cosine_similarity(x, pattern, dim=1)
