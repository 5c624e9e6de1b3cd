"""Scorers built on a principal subspace of the training features: ViM and NECO.

Both fit in float64 with `torch.linalg.eigh` (exact, deterministic, on the features' device);
eigenvectors are determined up to sign, which no score depends on.
"""
from __future__ import annotations

import torch

from ood.base import Scorer, require_features


def vim_default_dim(feature_dim: int) -> int:
    """ViM's principal-space dimension for feature dimension D, the rule stated in the paper.

    1000 if D >= 1500, 512 if D >= 768, else D // 2 (the official code has the first two cases:
    2048-d BiT features -> 1000, 768-d ViT features -> 512).
    """
    if feature_dim >= 1500:
        return 1000
    if feature_dim >= 768:
        return 512
    return feature_dim // 2


class ViMScorer(Scorer):
    """Virtual-logit matching: energy minus a scaled residual off the principal subspace.

    Fit (needs the classifier W (C x D), b; float64):
        u     = -pinv(W) b                                       origin where the logits vanish
        S     = (1/N) sum_i (h_i - u)(h_i - u)^T                 (uncentred about u, as the paper)
        P     = top-`dim` eigenvectors of S (principal space), R = the remaining D - dim (residual)
        alpha = sum_i max_c f(h_i)_c / sum_i ||R^T (h_i - u)||   over the training set
        score(h) = logsumexp_c f(h)_c - alpha * ||R^T (h - u)||  (energy minus the virtual logit)

    `dim` default: `vim_default_dim(D)` (1000 if D >= 1500, 512 if D >= 768, else D // 2).
    Logits f(h) = W h + b are computed from the features unless `logits` are passed to score.

    Wang, Li, Feng & Zhang, "ViM: Out-Of-Distribution with Virtual-logit Matching", CVPR 2022.
    OpenOOD v1.5 `vim`: `dim` 256, swept over [256, 1000]; fitted on the training split. The
    default here stays the paper's rule above (256 at OpenOOD's 512-d CIFAR features, and valid
    for 192- or 384-d ViT features, where 256 is not); `dim=256` gives OpenOOD's default.
    """

    needs_train_labels = False
    needs_classifier = True
    search_space = {"dim": [256, 1000]}
    fit_split = "train"
    uses_classifier = True

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        if dim is not None and dim < 1:
            raise ValueError(f"vim dim must be >= 1, got {dim}")
        self.principal_dim = dim

    def _fit(self, features, labels):
        x = features.to(torch.float64)
        feature_dim = x.shape[1]
        dim = vim_default_dim(feature_dim) if self.principal_dim is None else self.principal_dim
        if not 1 <= dim < feature_dim:
            raise ValueError(f"vim principal dim must be in [1, {feature_dim - 1}] for {feature_dim}-d features, got {dim}")
        weight, bias = self.weight.to(x.device), self.bias.to(x.device)
        origin = -torch.linalg.pinv(weight) @ bias
        shifted = x - origin
        _, eigvecs = torch.linalg.eigh(shifted.T @ shifted / x.shape[0])  # ascending eigenvalues
        residual_basis = eigvecs[:, : feature_dim - dim]
        residual_norm = torch.linalg.vector_norm(shifted @ residual_basis, dim=1)
        max_logit = torch.addmm(bias, x, weight.T).amax(dim=1)
        self.origin, self.residual_basis, self.fitted_dim = origin, residual_basis, dim
        self.alpha = float(max_logit.sum() / residual_norm.sum())  # > 0 when ID max logits are positive

    def _score(self, features, logits):
        features = require_features(self, features)
        origin, basis = self.origin.to(features.device), self.residual_basis.to(features.device)
        residual = torch.linalg.vector_norm((features.to(torch.float64) - origin) @ basis, dim=1)
        energy = torch.logsumexp(self.logits_of(features, logits), dim=1)
        return energy - self.alpha * residual


class NECOScorer(Scorer):
    """Neural-collapse-based ratio of the principal-subspace norm to the full norm.

    Fit (float64): standardize with the training mean m and standard deviation s (ddof 0,
    sklearn's StandardScaler: s = 1 for constant features), x~ = (h - m) / s; PCA on the
    standardized training features (mean p, eigenvectors of their covariance); V_d = top-`dim`
    principal directions.
        ratio(h) = ||V_d^T (x~ - p)|| / ||x~||                  (the official code's PCA transform)
        score(h) = ratio(h) * max_c f(h)_c     if use_max_logit (default), else ratio(h)

    The paper's NECO multiplies by the max logit; its code does so for every architecture except
    ResNets, where it reports the bare ratio - set use_max_logit=False for that variant. With
    use_max_logit the logits come from `logits` or from the weight and bias given at fit.
    `dim` default: C - 1 (C = number of training classes, or classifier rows when no labels),
    the dimension of the simplex ETF the class means collapse to; clamped to [1, D - 1].

    Ben Ammar, Belkhir, Popescu, Manzanera & Franchi, "NECO: NEural Collapse Based
    Out-of-distribution detection", ICLR 2024. Not in OpenOOD v1.5: no search; fitted on the
    training split. `uses_classifier` is False for an instance with use_max_logit=False.
    """

    needs_train_labels = False
    search_space = {}
    fit_split = "train"
    uses_classifier = True

    def __init__(self, dim: int | None = None, use_max_logit: bool = True) -> None:
        super().__init__()
        if dim is not None and dim < 1:
            raise ValueError(f"neco dim must be >= 1, got {dim}")
        self.principal_dim = dim
        self.use_max_logit = bool(use_max_logit)
        self.uses_classifier = self.use_max_logit

    def _fit(self, features, labels):
        x = features.to(torch.float64)
        feature_dim = x.shape[1]
        if feature_dim < 2 or x.shape[0] < 2:
            raise ValueError(f"neco needs at least 2 training samples of dimension >= 2, got {tuple(x.shape)}")
        if self.principal_dim is not None:
            dim = self.principal_dim
            if dim >= feature_dim:
                raise ValueError(f"neco dim must be < the feature dimension {feature_dim}, got {dim}")
        elif labels is not None:
            dim = min(max(torch.unique(labels).numel() - 1, 1), feature_dim - 1)
        elif self.weight is not None:
            dim = min(max(self.weight.shape[0] - 1, 1), feature_dim - 1)
        else:
            raise ValueError("neco needs dim=..., train_labels or the classifier weight to choose its dimension")
        mean = x.mean(dim=0)
        var = x.var(dim=0, correction=0)
        # sklearn's constant-feature test: var <= n eps var + (n eps mean)^2 -> scale 1.
        n_eps = x.shape[0] * torch.finfo(torch.float64).eps
        constant = var <= n_eps * var + (n_eps * mean).square()
        std = torch.where(constant, torch.ones_like(var), var.sqrt())
        scaled = (x - mean) / std
        pca_mean = scaled.mean(dim=0)
        centred = scaled - pca_mean
        _, eigvecs = torch.linalg.eigh(centred.T @ centred / (x.shape[0] - 1))  # ascending
        self.mean, self.std, self.pca_mean = mean, std, pca_mean
        self.components = eigvecs[:, -dim:].flip(1)
        self.fitted_dim = dim

    def ratio(self, features: torch.Tensor) -> torch.Tensor:
        """||V_d^T (x~ - p)|| / ||x~|| for features N x D -> float64 N."""
        features = self.check_scoring_features(features)
        mean, std, pca_mean, components = (t.to(features.device)
                                           for t in (self.mean, self.std, self.pca_mean, self.components))
        scaled = (features.to(torch.float64) - mean) / std
        reduced = (scaled - pca_mean) @ components
        return torch.linalg.vector_norm(reduced, dim=1) / torch.linalg.vector_norm(scaled, dim=1)

    def _score(self, features, logits):
        ratio = self.ratio(require_features(self, features))
        if not self.use_max_logit:
            return ratio
        return ratio * self.logits_of(features, logits).amax(dim=1)
