"""Scorers on the classifier's softmax probabilities p = softmax(f(h)), f(h) = W h + b.

Logits come from the `logits` passed to `score` when given, else from the features with the
classifier given at `fit` (float64). GEN needs nothing else; KL matching fits class templates
on logits of ID features; GradNorm also reads the features' L1 norm.
"""
from __future__ import annotations

import torch

from ood.base import Scorer, require_features


class GENScorer(Scorer):
    """Generalized entropy of the M largest class probabilities.

        score(h) = - sum over the M largest p_c of p_c^gamma (1 - p_c)^gamma,   M = `M` (<= C)

    Liu, Lochman & Zach, "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution
    Detection", CVPR 2023. OpenOOD v1.5 `gen`: `gamma` 0.1, `M` 100, swept over gamma in
    [0.01, 0.1, 0.5, 1, 2, 5, 10] x M in [10, 50, 100, 200, 500, 1000]; fits nothing.
    M above the number of classes C takes all C (as OpenOOD's slice does).
    """

    needs_train_features = needs_train_labels = False
    search_space = {"gamma": [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0], "M": [10, 50, 100, 200, 500, 1000]}
    fit_split = "train"
    uses_classifier = True

    def __init__(self, gamma: float = 0.1, M: int = 100) -> None:  # noqa: N803 (OpenOOD's name)
        super().__init__()
        if not gamma > 0:
            raise ValueError(f"gen gamma must be > 0, got {gamma}")
        if M < 1:
            raise ValueError(f"gen M must be >= 1, got {M}")
        self.gamma, self.M = float(gamma), int(M)

    def _score(self, features, logits):
        probs = torch.softmax(self.logits_of(features, logits), dim=1)
        top = probs.topk(min(self.M, probs.shape[1]), dim=1).values
        return -(top.pow(self.gamma) * (1.0 - top).pow(self.gamma)).sum(dim=1)


def kl_to_templates(log_probs: torch.Tensor, log_templates: torch.Tensor) -> torch.Tensor:
    """KL(p_i || q_c) for every row of `log_probs` (log p, N x C) and of `log_templates` (log q,
    K x C) -> N x K, from logarithms so that probabilities that underflow to 0 stay finite.

    scipy.stats.entropy's convention: 0 log(0/q) = 0, and +inf where some p_k > 0 meets q_k = 0
    (log q_k = -inf: only the one-hot templates of classes never predicted).
    """
    p = log_probs.exp()
    zero_q = torch.isinf(log_templates)
    cross = p @ log_templates.masked_fill(zero_q, 0.0).T
    kl = (p * log_probs).sum(dim=1, keepdim=True) - cross
    impossible = ((p > 0).to(p.dtype) @ zero_q.to(p.dtype).T) > 0
    return kl.masked_fill(impossible, float("inf"))


class KLMScorer(Scorer):
    """KL matching: distance of the softmax to the nearest class template.

        q_c = mean of p(h_i) over the fitted samples the classifier predicts as c
              (the one-hot e_c for a class predicted for none of them, as OpenOOD)
        score(h) = - min_c KL(p(h) || q_c)

    Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling
    Out-of-Distribution Detection for Real-World Settings", ICML 2022. OpenOOD v1.5 `klm`: no
    options, no search; the templates come from the ID validation split (`fit_split = "val"`), one
    per classifier row. Labels are not used (templates follow the predictions).
    Computed from log-softmax, with each template's logarithm a log-mean-exp, so that confident
    logits (probabilities that underflow to 0, where OpenOOD's scipy KL gives inf) score finitely;
    elsewhere the numbers are OpenOOD's.
    """

    needs_train_labels = False
    needs_classifier = True
    search_space = {}
    fit_split = "val"
    uses_classifier = True

    def _fit(self, features, labels):
        log_probs = torch.log_softmax(self.logits_of(features, None), dim=1)
        num_classes = log_probs.shape[1]
        predicted = log_probs.argmax(dim=1)
        counts = torch.bincount(predicted, minlength=num_classes)
        index = predicted[:, None].expand(-1, num_classes)
        peak = torch.full((num_classes, num_classes), -torch.inf, dtype=log_probs.dtype, device=log_probs.device)
        peak = peak.scatter_reduce(0, index, log_probs, reduce="amax")  # per template and class: the largest log p
        peak = torch.where(counts[:, None] > 0, peak, torch.zeros_like(peak))
        sums = torch.zeros_like(peak).index_add_(0, predicted, (log_probs - peak[predicted]).exp())
        log_mean = peak + sums.log() - counts.clamp_min(1).to(sums.dtype).log()[:, None]
        one_hot = torch.eye(num_classes, dtype=torch.bool, device=log_probs.device)
        fallback = torch.zeros_like(peak).masked_fill(~one_hot, -torch.inf)  # log e_c
        self.log_templates = torch.where(counts[:, None] > 0, log_mean, fallback)

    def _score(self, features, logits):
        log_probs = torch.log_softmax(self.logits_of(features, logits), dim=1)
        return -kl_to_templates(log_probs, self.log_templates.to(log_probs.device)).amin(dim=1)


class GradNormScorer(Scorer):
    """GradNorm: L1 norm of the gradient of a uniform-target cross-entropy w.r.t. the last layer.

        score(h) = sum_{c,j} |dL/dW_cj| = ||h||_1 * sum_c |C p_c - 1|,   L = - sum_c log p_c(h)

    (the gradient dL/dW = (C p - 1) h^T is a rank-one outer product, so its entry-wise L1 norm
    factorizes: no backward pass, no loop over samples).
    Huang, Geng & Li, "On the Importance of Gradients for Detecting Distributional Shifts in the
    Wild", NeurIPS 2021. The paper's target is uniform (1/C each): its score is this one divided
    by C, the same ranking; OpenOOD's all-ones target (followed here) gives the formula above.
    OpenOOD v1.5 `gradnorm`: no options, no search; fits nothing. Needs the features (for
    ||h||_1) and the logits (given, or from the classifier).
    """

    needs_train_features = needs_train_labels = False
    search_space = {}
    fit_split = "train"
    uses_classifier = True

    def _score(self, features, logits):
        features = require_features(self, features)
        probs = torch.softmax(self.logits_of(features, logits), dim=1)
        spread = (probs.shape[1] * probs - 1.0).abs().sum(dim=1)
        return features.to(torch.float64).abs().sum(dim=1).to(spread.device) * spread
