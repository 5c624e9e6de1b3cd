"""A differentiable neural-collapse loss on one batch of penultimate features.

Haas, Yolland & Rabus, "Linking Neural Collapse and L2 Normalization with Improved
Out-of-Distribution Detection in Deep Neural Networks", TMLR 2022, Eq. 3: their NC
intervention trains with no cross-entropy at all, only with the sum of the differentiable
neural-collapse metrics of Papyan, Han & Donoho (PNAS 2020), unweighted (every term is 0 at
collapse); NC4 is left out because its argmin is not differentiable:

    L = NC1 + EN_means + EN_classifier + EA_means + EA_classifier + NC3

Each term uses the formula of the metric with the same name in :mod:`metrics.nc`, evaluated on
the batch. With features h_i (the classifier's input), the K classes that have at least two
samples in the batch, class means mu_k, mu_G = (1/K) sum_k mu_k, centred means Mc (K x D) with
rows mu_k - mu_G, and the classifier weight W (C x D):

    NC1            Tr(Sigma_W Sigma_B^+) / K,  Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T,
                   Sigma_B = (1/K) Mc^T Mc, Sigma_B^+ on its top r = min(D, K-1) eigenpairs  (`nc1`)
    EN_means       std(||mu_k - mu_G||) / mean(||mu_k - mu_G||), std with ddof=1       (`nc2_equinorm`)
    EA_means       mean over k != k' of |cos(mu_k - mu_G, mu_k' - mu_G) + 1/(K-1)|      (`nc2_equiangle`)
    EN_classifier  the EN formula on the C rows of W                                    (`w_equinorm`)
    EA_classifier  the EA formula on the C rows of W, with 1/(C-1)                      (`w_equiangle`)
    NC3            || W_K/||W_K||_F - Mc/||Mc||_F ||_F^2, W_K the rows of the K classes  (`nc3`)

Batches: samples of a class that occurs only once in the batch are left out (its
within-class spread is not measured); at least two classes with two samples each are needed.
With all C classes present (the usual case: a CIFAR-10 batch of 128 misses a class with
probability ~1e-5) every term equals the metric of :mod:`metrics.nc` on the batch. When K < C the
classifier terms EN/EA_classifier still use all C rows (they do not depend on the batch), and
NC3 centres W_K by its row mean, as the class means are centred by theirs: the means of K of
the C vertices of a simplex ETF, centred, are a K-class simplex ETF, and W_K centred is then
proportional to Mc, so every term is still 0 at collapse. EA here is the distance to the
maximal angle, |cos + 1/(K-1)|, as in :mod:`metrics.nc` (Papyan et al. also plot the standard
deviation of the cosines, which is 0 for any equiangular set, maximal angle or not).

Numerics, in float64 with autocast off: the pseudo-inverse is never an eigendecomposition
(whose gradient is unstable when eigenvalues are close). With r = K-1 (D >= K-1), and
G = Mc Mc^T (K x K, null vector 1 since the centred means sum to 0), G^+ = (G + J)^-1 - J with
J = 11^T/K, and Tr(Sigma_W Sigma_B^+) = K Tr(G^+ Q G^+) with Q = Mc Sigma_W Mc^T; with r = D
(D < K-1), Sigma_B is invertible and Tr(Sigma_W Sigma_B^-1) comes from a Cholesky solve. Both
equal the eigenpair pseudo-inverse of :mod:`metrics.nc` when the means are in general position;
both work on K x K or D x D matrices only (no D x D matrix when D > K-1).
"""
from __future__ import annotations

import torch
from torch import nn

TERMS = ("nc1", "en_means", "en_classifier", "ea_means", "ea_classifier", "nc3")


def _equinorm(vectors: torch.Tensor) -> torch.Tensor:
    norms = vectors.norm(dim=1)
    return norms.std(correction=1) / norms.mean()


def _equiangle(vectors: torch.Tensor) -> torch.Tensor:
    k = vectors.shape[0]
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    off_diag = ~torch.eye(k, dtype=torch.bool, device=vectors.device)
    return (unit @ unit.T + 1.0 / (k - 1))[off_diag].abs().mean()


def _cholesky(matrix: torch.Tensor) -> torch.Tensor:
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) != 0:
        raise ValueError("the batch's class means are linearly dependent (they span fewer than min(D, K-1) "
                         "dimensions), so NC1 is undefined; start from a trained model or raise the batch size")
    return factor


def _nc1(centred_features: torch.Tensor, centred_means: torch.Tensor) -> torch.Tensor:
    """Tr(Sigma_W Sigma_B^+) / K from within-class residuals (N x D) and centred means (K x D)."""
    n, d = centred_features.shape
    k = centred_means.shape[0]
    if d >= k - 1:
        ones = torch.full((k, k), 1.0 / k, dtype=centred_means.dtype, device=centred_means.device)
        gram_pinv = torch.cholesky_inverse(_cholesky(centred_means @ centred_means.T + ones)) - ones
        projected = centred_features @ centred_means.T                    # N x K
        q = projected.T @ projected / n                                   # Mc Sigma_W Mc^T
        return torch.trace(gram_pinv @ q @ gram_pinv)                     # K Tr(G^+ Q G^+) / K
    sigma_b = centred_means.T @ centred_means / k
    sigma_w = centred_features.T @ centred_features / n
    return torch.trace(torch.cholesky_solve(sigma_w, _cholesky(sigma_b))) / k


class NCLoss(nn.Module):
    """L = NC1 + EN_means + EN_classifier + EA_means + EA_classifier + NC3 on a batch (see the
    module docstring for each term, the batch rules and the numerics).

    ``loss(features, labels, weight)`` returns the scalar loss (float32); ``loss.terms(...)``
    the six terms by name (float64). ``features``: the classifier's input (B x D, any float
    dtype and device), ``labels``: B class indices in [0, C), ``weight``: the classifier's W (C x D).
    """

    def terms(self, features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        if features.dim() != 2 or weight.dim() != 2 or features.shape[1] != weight.shape[1]:
            raise ValueError(f"NCLoss needs features B x D and a classifier weight C x D, got {tuple(features.shape)} "
                             f"and {tuple(weight.shape)}")
        if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(f"NCLoss needs one label per feature row, got {tuple(labels.shape)} labels for "
                             f"{features.shape[0]} rows")
        with torch.autocast(device_type=features.device.type, enabled=False):
            h, w = features.double(), weight.double()
            classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
            kept = counts >= 2
            if int(kept.sum()) < 2:
                raise ValueError(f"NCLoss needs at least 2 classes with at least 2 samples each in a batch, got "
                                 f"class counts {dict(zip(classes.tolist(), counts.tolist()))}; raise the batch size")
            if not bool(kept.all()):  # drop the samples of classes seen once, re-index the rest
                keep_rows = kept[inverse]
                h, inverse = h[keep_rows], torch.cumsum(kept, 0)[inverse[keep_rows]] - 1
                classes, counts = classes[kept], counts[kept]
            k = classes.shape[0]
            sums = torch.zeros(k, h.shape[1], dtype=h.dtype, device=h.device).index_add(0, inverse, h)
            means = sums / counts.to(h.dtype).unsqueeze(1)
            centred = means - means.mean(dim=0)
            w_k = w[classes]
            if k < w.shape[0]:
                w_k = w_k - w_k.mean(dim=0)
            nc3 = (w_k / torch.linalg.matrix_norm(w_k) - centred / torch.linalg.matrix_norm(centred)).square().sum()
            return {"nc1": _nc1(h - means[inverse], centred),
                    "en_means": _equinorm(centred), "en_classifier": _equinorm(w),
                    "ea_means": _equiangle(centred), "ea_classifier": _equiangle(w),
                    "nc3": nc3}

    def forward(self, features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.stack(list(self.terms(features, labels, weight).values())).sum().float()
