"""Gaussian density scorers on features: per-class GMM (DDU) and tied-covariance Mahalanobis.

Both fit their statistics in float64 and score in batches of `batch_size` test samples, so
memory beyond the fitted statistics stays O(batch_size x (C + D)).
"""
from __future__ import annotations

import math

import torch

from ood.base import Scorer, check_batch_size, require_features

# Jitters tried in turn for the GMM covariances: 0, then 1e-20, 1e-19, ..., 1e-1, 1.
# DDU tries 0, the smallest float64, then 10^e for e = -308..-1; jitters below ~1e-20 are
# rounding noise next to any covariance entry, so this ladder starts there and goes up to 1.
JITTER_LADDER = (0.0,) + tuple(10.0 ** e for e in range(-20, 1))


def class_partition(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(classes, index of each sample's class in `classes`, counts) for the labels present."""
    classes, inverse, counts = torch.unique(labels, sorted=True, return_inverse=True, return_counts=True)
    return classes, inverse, counts


def smallest_jitter_cholesky(covariances: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cholesky factors of covariances + eps I (C x D x D) for the first eps of JITTER_LADDER
    that makes every matrix positive definite (`cholesky_ex` info == 0 for all), and that eps.

    Each rung factors the classes one by one and stops at the first failure (that class is
    tried first on the next rung), so a failing rung costs about one factorization, not C. A
    rung that leaves every diagonal entry bitwise unchanged (eps below half an ulp) is skipped:
    it is the same matrix as the previous failed try.
    """
    num_classes = covariances.shape[0]
    original = covariances.diagonal(dim1=-2, dim2=-1)
    chol = torch.empty_like(covariances)
    order = list(range(num_classes))
    last_failed = None
    for jitter in JITTER_LADDER:
        jittered = original + jitter
        if last_failed is not None and torch.equal(jittered, last_failed):
            continue
        for position, c in enumerate(order):
            matrix = covariances[c].clone()
            matrix.diagonal().copy_(jittered[c])
            factor, info = torch.linalg.cholesky_ex(matrix)
            if info.item() != 0:
                order.insert(0, order.pop(position))
                last_failed = jittered
                break
            chol[c] = factor
        else:
            return chol, jitter
    raise ValueError(f"no jitter up to {JITTER_LADDER[-1]} makes every class covariance positive definite; "
                     "the features are badly scaled (rescale them) or degenerate")


def pinv_whitener(covariance: torch.Tensor) -> torch.Tensor:
    """V diag(lambda)^-1/2 over the eigenpairs of a symmetric PSD `covariance` kept by the
    pseudo-inverse (lambda > D eps lambda_max, scipy's `pinvh` default), so that
    x^T Sigma^+ x = ||x^T V diag(lambda)^-1/2||^2. D x rank; rank 0 for a zero matrix."""
    eigvals, eigvecs = torch.linalg.eigh(covariance)
    keep = eigvals > covariance.shape[0] * torch.finfo(torch.float64).eps * eigvals.abs().max()
    return eigvecs[:, keep] / eigvals[keep].sqrt()


class GMMScorer(Scorer):
    """Class-conditional Gaussian density (DDU's feature-space density).

    Fit, in float64, one Gaussian per class c with n_c samples:
        mu_c    = (1/n_c) sum_{i in c} z_i
        Sigma_c = 1/(n_c - 1) sum_{i in c} (z_i - mu_c)(z_i - mu_c)^T
    plus one jitter eps * I shared by all classes: the first eps of `JITTER_LADDER`
    (0, 1e-20, 1e-19, ..., 1) for which every Sigma_c + eps I is positive definite, tested by
    `torch.linalg.cholesky_ex` (info == 0). Classes with fewer samples than dimensions have
    singular covariances and are rescued by the jitter; a class needs >= 2 samples.
    The jitter is absolute (not relative to the feature scale), as in DDU.

        score(z) = logsumexp_c log N(z | mu_c, Sigma_c + eps I)
        log N(z | mu, Sigma) = -1/2 (D log 2pi + log det Sigma + ||L^-1 (z - mu)||^2),  Sigma = L L^T

    The quadratic term is a triangular solve with the Cholesky factor L_c for each class and
    batch (never a matrix inverse, never exp of a density, never an N x C x D x D tensor),
    done in place on the centred batch, so each class costs one subtraction and the solve.
    Memory: the C Cholesky factors (C x D x D; the covariances themselves are not kept) plus
    O(batch_size x (C + D)) while scoring.
    Classes are the distinct labels present in the training labels (`self.classes`), with no
    class prior (DDU's logsumexp of the class log-densities).

    Mukhoti, Kirsch, van Amersfoort, Torr & Gal, "Deep Deterministic Uncertainty: A New Simple
    Baseline", CVPR 2023 (arXiv 2102.11582, 2021). Not OpenOOD's `gmm` (a different, unsupervised
    mixture): no search; fitted on the training split.
    """

    search_space = {}
    fit_split = "train"
    uses_classifier = False

    def __init__(self, batch_size: int = 1024) -> None:
        super().__init__()
        self.batch_size = check_batch_size("gmm", batch_size)

    def _fit(self, features, labels):
        x = features.to(torch.float64)
        classes, inverse, counts = class_partition(labels)
        if (counts < 2).any():
            bad = int(classes[counts < 2][0])
            raise ValueError(f"class {bad} has {int(counts[counts < 2][0])} training sample; the gmm scorer "
                             "needs at least 2 per class (covariance with 1/(n_c - 1)); drop that class or add samples")
        num_classes, dim = classes.numel(), x.shape[1]
        means = torch.empty(num_classes, dim, dtype=torch.float64, device=x.device)
        covariances = torch.empty(num_classes, dim, dim, dtype=torch.float64, device=x.device)
        by_class = x[torch.argsort(inverse, stable=True)].split(counts.tolist())
        for c, members in enumerate(by_class):
            means[c] = members.mean(dim=0)
            centred = members - means[c]
            torch.mm(centred.T, centred, out=covariances[c])
            covariances[c] /= members.shape[0] - 1
        chol, jitter = smallest_jitter_cholesky(covariances)
        self.classes, self.means, self.jitter = classes, means, jitter
        self._chol = chol
        log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(dim=1)
        self._log_norm = -0.5 * (dim * math.log(2.0 * math.pi) + log_det)

    def _batch_log_densities(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z | mu_c, Sigma_c + eps I) for a float64 batch z (B x D) -> B x C."""
        chol, means, log_norm = (t.to(z.device) for t in (self._chol, self.means, self._log_norm))
        norms = torch.empty(means.shape[0], z.shape[0], dtype=torch.float64, device=z.device)
        centred = torch.empty_like(z)  # reused for every class: few large allocations per batch
        for c in range(means.shape[0]):
            torch.sub(z, means[c], out=centred)
            # centred^T is D x B and column-major, the layout the triangular solver works in; solving
            # into it (out=) spares the copy of the right-hand side a fresh result would take (a
            # profile put that copy at a seventh of the scoring time).
            white = torch.linalg.solve_triangular(chol[c], centred.T, upper=False, out=centred.T)
            torch.linalg.vector_norm(white, dim=0, out=norms[c])
        return log_norm - 0.5 * norms.T.square()

    def log_densities(self, features: torch.Tensor) -> torch.Tensor:
        """Per-class log-densities, float64 N x C (columns in the order of `self.classes`)."""
        features = self.check_scoring_features(features)
        return torch.cat([self._batch_log_densities(batch.to(torch.float64))
                          for batch in features.split(self.batch_size)])

    def _score(self, features, logits):
        features = require_features(self, features)
        return torch.cat([torch.logsumexp(self._batch_log_densities(batch.to(torch.float64)), dim=1)
                          for batch in features.split(self.batch_size)])


class MahalanobisScorer(Scorer):
    """Minimum Mahalanobis distance to the class means under one tied covariance.

    Fit, in float64, with N training samples:
        mu_c  = class means
        Sigma = (1/N) sum_i (z_i - mu_{y_i})(z_i - mu_{y_i})^T      (sample-weighted, within-class)
        score(z) = -min_c (z - mu_c)^T Sigma^+ (z - mu_c)

    Sigma^+ is the Moore-Penrose pseudo-inverse from `torch.linalg.eigh`, dropping eigenvalues
    <= D * eps_float64 * lambda_max (scipy's `pinvh` default, which sklearn's
    `EmpiricalCovariance.precision_` uses, as in the paper's code). The distance is computed in
    whitened coordinates u = (z - m) V diag(lambda)^-1/2 (m = mean of the class means, which
    limits cancellation), so each batch costs one D x rank matmul plus a B x C distance table.
    The paper's score is max_c of -1/2 times the distance; the factor 1/2 does not change the
    ranking and is dropped here (as in the ViM and OpenOOD implementations).

    Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution Samples
    and Adversarial Attacks", NeurIPS 2018 (without input pre-processing or layer ensembles).
    OpenOOD v1.5 `mds`: no options, no search; fitted on the training split.
    """

    search_space = {}
    fit_split = "train"
    uses_classifier = False

    def __init__(self, batch_size: int = 4096) -> None:
        super().__init__()
        self.batch_size = check_batch_size("mahalanobis", batch_size)

    def _fit(self, features, labels):
        x = features.to(torch.float64)
        classes, inverse, counts = class_partition(labels)
        means = torch.zeros(classes.numel(), x.shape[1], dtype=torch.float64, device=x.device)
        means.index_add_(0, inverse, x)
        means /= counts.to(means)[:, None]
        centred = x - means[inverse]
        covariance = centred.T @ centred / x.shape[0]
        self.classes, self.means, self.covariance = classes, means, covariance
        self.centre = means.mean(dim=0)
        self._whiten = pinv_whitener(covariance)
        self._white_means = (means - self.centre) @ self._whiten

    def _score(self, features, logits):
        features = require_features(self, features)
        device = features.device
        whiten, white_means, centre = (t.to(device) for t in (self._whiten, self._white_means, self.centre))
        scores = []
        for batch in features.split(self.batch_size):
            white = (batch.to(torch.float64) - centre) @ whiten
            dist = torch.cdist(white, white_means, compute_mode="donot_use_mm_for_euclid_dist")
            scores.append(-dist.amin(dim=1).square())
        return torch.cat(scores)


class RMDSScorer(MahalanobisScorer):
    """Relative Mahalanobis distance: the class distance minus a class-agnostic background distance.

        d_c(h) = (h - mu_c)^T Sigma^+ (h - mu_c)       class means, pooled within-class covariance (1/N)
        d_0(h) = (h - mu_0)^T Sigma_0^+ (h - mu_0)     mu_0, Sigma_0 = mean and covariance (1/N) of all
                                                       fitted samples
        score(h) = max_c (-d_c(h)) + d_0(h)

    The class part is `mahalanobis`'s score; both pseudo-inverses drop eigenvalues <= D eps
    lambda_max (sklearn's `EmpiricalCovariance.precision_`, as OpenOOD). Ren, Fort, Liu, Roy,
    Padhy & Lakshminarayanan, "A Simple Fix to Mahalanobis Distance for Improving Near-OOD
    Detection", arXiv 2106.09022, 2021. OpenOOD v1.5 `rmds`: no options, no search; fitted on the
    training split (features and labels). OpenOOD computes in float32; here float64.
    """

    search_space = {}
    fit_split = "train"
    uses_classifier = False

    def _fit(self, features, labels):
        super()._fit(features, labels)
        x = features.to(torch.float64)
        self.background_mean = x.mean(dim=0)
        centred = x - self.background_mean
        self._background_whiten = pinv_whitener(centred.T @ centred / x.shape[0])

    def _score(self, features, logits):
        class_part = super()._score(features, logits)
        mean, whiten = self.background_mean.to(features.device), self._background_whiten.to(features.device)
        background = torch.cat([((batch.to(torch.float64) - mean) @ whiten).square().sum(dim=1)
                                for batch in features.split(self.batch_size)])
        return class_part + background
