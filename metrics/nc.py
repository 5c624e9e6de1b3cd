"""Neural-collapse statistics and metrics, streamed over batches of features.

Notation: N samples h_i in R^D with labels y_i in {0..C-1}; class means mu_c; global mean
mu_G = (1/C) sum_c mu_c (the mean of the class means, not of the samples); centred means
Mc (C x D) with rows mu_c - mu_G; a linear classifier W (C x D), b (C).

    Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T      within-class covariance
    Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T             between-class covariance
    Sigma_T = Sigma_W + Sigma_B
    r       = min(D, C - 1)                                         rank of Sigma_B in general position

The metrics, one entry each in :data:`NC_METRICS` (the one list every table, log, figure and
study reads; every metric is 0 at perfect collapse onto a simplex ETF whose classifier rows equal
the centred means and b = 0):

    nc1            Tr(Sigma_W Sigma_B^+) / C; Sigma_B^+ uses the top r eigenpairs of Sigma_B
                   [Papyan, Han & Donoho, PNAS 2020, "NC1"].
    nc1_cdnv       mean over c < c' of (var_c + var_c') / (2 ||mu_c - mu_c'||^2),
                   var_c = mean over class c of ||h - mu_c||^2
                   [Galanti, Gyorgy & Hutter, ICLR 2022, class-distance normalized variance].
    vci            1 - Tr(Sigma_T^+ Sigma_B) / r, in [0, 1]; lower = more collapse
                   [Xu & Liu, ICML 2023, variability collapse index]. Rounding can take the
                   difference a few ulps outside [0, 1] (at collapse Tr/r is 1 up to ~1e-15);
                   values within ROUNDING_TOL of the interval are clamped into it, anything
                   further out is returned as computed.
    nc2_equinorm   std(||mu_c - mu_G||) / mean(||mu_c - mu_G||), std with ddof=1 [Papyan et al., NC2].
    nc2_equiangle  mean over c != c' of |cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)| [Papyan et al., NC2].
    nc2_etf_error  || G/||G||_F - (I - 11^T/C)/sqrt(C-1) ||_F with G = Mc Mc^T
                   [Zhu et al., NeurIPS 2021, "NC2" as an ETF distance].
  with a classifier (weight W, optional bias b, b = 0 when omitted):
    w_equinorm, w_equiangle   the NC2 formulas on the rows of W (not centred) [Papyan et al.].
    w_etf_error    the ETF error of G = W W^T [Zhu et al.].
    wm_etf_error   the ETF error of G = W Mc^T (C x C, not symmetrized) [Zhu et al., "NC3" as an ETF distance].
    nc3            || W/||W||_F - Mc/||Mc||_F ||_F^2 [Papyan et al., self-duality].
    nc4            fraction of samples where argmin_c ||h - mu_c|| != argmax_c (W h + b)
                   [Papyan et al., nearest-class-centre agreement]; needs a second pass over the
                   features once the means are known (`NCCAccumulator`).
  with labels, in that second pass:
    ncc_acc        fraction of samples where argmin_c ||h - mu_c|| = y, the nearest-class-centre
                   accuracy [Galanti, Gyorgy & Hutter, ICLR 2022]; the centres are the features' own
                   class means, or given ones (e.g. the training means for test features: whether
                   collapse generalizes).
  of ID class means against an OOD set (:func:`nc5`):
    nc5            mean over ID classes c of |cos(mu_c, mu_G^OOD)|, mu_G^OOD the OOD set's mean
                   [Ammar et al., "NECO", ICLR 2024: ID/OOD orthogonality]; 0 when every class mean is
                   orthogonal to the OOD mean.
  Adding a metric: one function of the quantities (:class:`Quantities`) and one entry in NC_METRICS.
    bias_collapse  || W mu_G + b || [Zhu et al., NeurIPS 2021].

Mapping to the ICML 2025 paper (Harun, Gallardo & Kanan), whose official evaluation
(`nc_eval/nc_criteria.py`, function `nc_values`) reports four numbers called NC1-NC4:
    its NC1 = Tr(Sigma_W pinv(Sigma_B)) / C with scipy's default pinv tolerance  -> `nc1` here
          (same formula; here the pseudo-inverse keeps exactly the top r eigenpairs);
    its NC2 = ETF error of W W^T                                                 -> `w_etf_error`;
    its NC3 = ETF error of W Mc^T                                                -> `wm_etf_error`;
    its NC4 = ||W mu_G + b||                                                     -> `bias_collapse`.
It computes them on training features with the linear probe's W and b, and its Sigma_W sums
per-sample outer products class by class; here one matmul per batch does the same work.

Pseudo-inverses are taken from `torch.linalg.eigh` in float64, never a default `pinv`:
  * Sigma_B^+ keeps the top r = min(D, C-1) eigenpairs (its rank when the class means are in
    general position), dropping any of them below PINV_RTOL * lambda_max (only when the means
    span fewer than r dimensions).
  * Sigma_T^+ keeps every eigenpair above PINV_RTOL * lambda_max. Sigma_T is full rank for noisy
    features, so this is its inverse; when it is rank deficient (dead units, zero within-class
    noise) the dropped directions carry no between-class variance either (range(Sigma_B) is
    inside range(Sigma_T)), so Tr(Sigma_T^+ Sigma_B) loses nothing and vci stays in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from metrics.class_stats import (
    ClassStats,
    NCCAccumulator,
    NCStats,
    _check_labels,
    _classifier,
)

__all__ = ["PINV_RTOL", "ROUNDING_TOL", "NC_METRICS", "NCMetric", "NCStats", "ClassStats", "NCCAccumulator",
           "class_means", "metric_keys", "nc5", "nc_metrics", "nc_metrics_from_stats", "stream_nc_metrics"]

PINV_RTOL = 1e-10
"""Eigenvalues below PINV_RTOL * (largest eigenvalue) count as zero in the pseudo-inverses."""
ROUNDING_TOL = 1e-9
"""A metric bounded by its formula (vci in [0, 1]) is clamped into its bounds when rounding puts it
at most this far outside them."""

_CHUNK_ROWS = 8192  # rows per pass in nc_metrics: bounds the float64 copy of in-memory features


def _etf_error(gram: torch.Tensor) -> float:
    """|| G/||G||_F - (I - 11^T/C)/sqrt(C-1) ||_F  [Zhu et al., NeurIPS 2021]."""
    c = gram.shape[0]
    target = (torch.eye(c, dtype=gram.dtype, device=gram.device) - 1.0 / c) / (c - 1) ** 0.5
    return float(torch.linalg.matrix_norm(gram / torch.linalg.matrix_norm(gram) - target))


def _equinorm(vectors: torch.Tensor) -> float:
    """std / mean of the row norms (std with ddof=1)  [Papyan et al., NC2]."""
    norms = vectors.norm(dim=1)
    return float(norms.std(correction=1) / norms.mean())


def _equiangle(vectors: torch.Tensor) -> float:
    """mean over c != c' of |cos(v_c, v_c') + 1/(C-1)|  [Papyan et al., NC2]."""
    c = vectors.shape[0]
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    off_diag = ~torch.eye(c, dtype=torch.bool, device=vectors.device)
    return float((unit @ unit.T + 1.0 / (c - 1))[off_diag].abs().mean())


def _top_eigenpairs(sym: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `keep` largest eigenpairs of a symmetric PSD matrix, minus any below PINV_RTOL * lambda_max."""
    evals, evecs = torch.linalg.eigh(sym)
    evals, evecs = evals[-keep:], evecs[:, -keep:]
    kept = evals > PINV_RTOL * evals[-1]
    return evals[kept], evecs[:, kept]


def _trace_pinv_product(inverted: torch.Tensor, other: torch.Tensor, keep: int) -> float:
    """Tr(other inverted^+) with inverted^+ built from its top eigenpairs (see `_top_eigenpairs`)."""
    evals, evecs = _top_eigenpairs(inverted, keep)
    return float(((evecs.T @ other * evecs.T).sum(dim=1) / evals).sum())


def _clamp_rounding(value: float, low: float, high: float) -> float:
    """``value`` clamped into [low, high] when it lies at most ROUNDING_TOL outside; otherwise unchanged."""
    if low - ROUNDING_TOL <= value < low:
        return low
    if high < value <= high + ROUNDING_TOL:
        return high
    return value


class Quantities:
    """What the metric formulas read, computed once per call from the statistics (and the classifier):
    ``stats``, ``c``, ``d``, ``rank`` = min(D, C-1), ``centred`` (Mc), ``dist2`` (squared distances of
    the class means), ``pair`` (the c < c' mask), ``w`` and ``b`` (float64; None without a classifier)."""

    def __init__(self, stats: NCStats, weight: torch.Tensor | None, bias: torch.Tensor | None,
                 ncc_mismatch: float | None, ncc_accuracy: float | None = None) -> None:
        self.stats, self.ncc_mismatch, self.ncc_accuracy = stats, ncc_mismatch, ncc_accuracy
        self.c, self.d = stats.means.shape
        self.rank = min(self.d, self.c - 1)
        self.centred = stats.means - stats.global_mean
        sqnorm = self.centred.square().sum(dim=1)
        self.dist2 = (sqnorm[:, None] + sqnorm[None, :] - 2.0 * self.centred @ self.centred.T).clamp_min(0.0)
        self.pair = torch.triu(torch.ones(self.c, self.c, dtype=torch.bool, device=stats.means.device), diagonal=1)
        if float(self.dist2[self.pair].min()) == 0.0:
            i, j = (int(k) for k in torch.nonzero(self.pair & (self.dist2 == 0))[0])
            raise ValueError(f"classes {i} and {j} have the same mean; neural-collapse metrics need distinct "
                             "class means (are the features constant?)")
        self.w = self.b = None
        if weight is not None:
            self.w, self.b = _classifier(weight, bias, self.c, self.d, stats.means.device)
        elif bias is not None:
            raise ValueError("bias given without weight; pass the classifier weight too")

    @cached_property
    def sigma_t(self) -> torch.Tensor:
        return self.stats.sigma_w + self.stats.sigma_b


def _nc1(q: Quantities) -> float:
    return _trace_pinv_product(q.stats.sigma_b, q.stats.sigma_w, q.rank) / q.c


def _cdnv(q: Quantities) -> float:
    var = q.stats.class_var
    return float(((var[:, None] + var[None, :]) / (2.0 * q.dist2))[q.pair].mean())


def _vci(q: Quantities) -> float:
    return _clamp_rounding(1.0 - _trace_pinv_product(q.sigma_t, q.stats.sigma_b, q.d) / q.rank, 0.0, 1.0)


def _nc3(q: Quantities) -> float:
    return float(torch.linalg.matrix_norm(
        q.w / torch.linalg.matrix_norm(q.w) - q.centred / torch.linalg.matrix_norm(q.centred)).square())


def _bias_collapse(q: Quantities) -> float:
    return float(torch.linalg.vector_norm(q.w @ q.stats.global_mean + q.b))


@dataclass(frozen=True)
class NCMetric:
    """One neural-collapse metric (formula and source in the module docstring).

    ``needs``: ``stats`` (the class statistics), ``classifier`` (also W and b), ``ncc`` (also the
    second pass of :class:`NCCAccumulator` with the classifier) or ``labels`` (its pass with the labels). ``table``: a column of eval_nc.py's printed table and
    figure. ``log_scale``: drawn on a log axis. ``collapse``: a collapse statistic of the features
    alone, logged by the monitor every epoch, reported beside transfer and correlated with it."""

    key: str
    compute: Callable[[Quantities], float]
    needs: str = "stats"
    table: bool = False
    log_scale: bool = False
    collapse: bool = False


NC_METRICS: tuple[NCMetric, ...] = (
    NCMetric("nc1", _nc1, table=True, log_scale=True, collapse=True),
    NCMetric("nc1_cdnv", _cdnv, table=True, log_scale=True, collapse=True),
    NCMetric("vci", _vci, table=True, collapse=True),
    NCMetric("nc2_equinorm", lambda q: _equinorm(q.centred)),
    NCMetric("nc2_equiangle", lambda q: _equiangle(q.centred)),
    NCMetric("nc2_etf_error", lambda q: _etf_error(q.centred @ q.centred.T), table=True),
    NCMetric("w_equinorm", lambda q: _equinorm(q.w), needs="classifier"),
    NCMetric("w_equiangle", lambda q: _equiangle(q.w), needs="classifier"),
    NCMetric("w_etf_error", lambda q: _etf_error(q.w @ q.w.T), needs="classifier", table=True),
    NCMetric("wm_etf_error", lambda q: _etf_error(q.w @ q.centred.T), needs="classifier"),
    NCMetric("nc3", _nc3, needs="classifier", table=True),
    NCMetric("bias_collapse", _bias_collapse, needs="classifier", table=True),
    NCMetric("nc4", lambda q: float(q.ncc_mismatch), needs="ncc", table=True),
    NCMetric("ncc_acc", lambda q: float(q.ncc_accuracy), needs="labels", table=True),
)


def metric_keys(*, table: bool | None = None, log_scale: bool | None = None, collapse: bool | None = None) -> list[str]:
    """The keys of :data:`NC_METRICS` (in its order) with the given flags, e.g. ``metric_keys(collapse=True)``."""
    wanted = {"table": table, "log_scale": log_scale, "collapse": collapse}
    return [m.key for m in NC_METRICS if all(v is None or getattr(m, k) == v for k, v in wanted.items())]


def nc_metrics_from_stats(stats: NCStats, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                          ncc_mismatch: float | None = None, ncc_accuracy: float | None = None) -> dict[str, float]:
    """Every metric of :data:`NC_METRICS` that the inputs allow, from `ClassStats.compute()`: those of
    the statistics; with `weight` (and `bias`) the classifier's; with `ncc_mismatch` / `ncc_accuracy`
    (from `NCCAccumulator.compute()` / `.accuracy()`) also nc4 / ncc_acc. Formulas and sources in the
    module docstring."""
    q = Quantities(stats, weight, bias, ncc_mismatch, ncc_accuracy)
    have = {"stats": True, "classifier": q.w is not None, "ncc": ncc_mismatch is not None,
            "labels": ncc_accuracy is not None}
    return {m.key: m.compute(q) for m in NC_METRICS if have[m.needs]}


def class_means(batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]], num_classes: int,
                dim: int) -> torch.Tensor:
    """The class means (C x D, float64) of streamed ``(features, labels)`` batches."""
    stats_acc = ClassStats(num_classes, dim)
    for x, y in batches():
        stats_acc.update(x, y)
    return stats_acc.compute().means


def stream_nc_metrics(batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]], num_classes: int, dim: int,
                      weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                      centres: torch.Tensor | None = None) -> dict[str, float]:
    """:func:`nc_metrics_from_stats` of features that never sit in memory at once: ``batches()``
    yields ``(features B x D, labels B)`` chunks and is called twice (the class statistics first,
    then the nearest-class-centre pass of nc4 and ncc_acc). ``centres``: the class means ncc_acc is
    measured against (default: the features' own)."""
    stats_acc = ClassStats(num_classes, dim)
    for x, y in batches():
        stats_acc.update(x, y)
    stats = stats_acc.compute()
    ncc = NCCAccumulator(stats.means if centres is None else centres, weight, bias)
    for x, y in batches():
        ncc.update(x, y)
    mismatch = ncc.compute() if weight is not None else None
    return nc_metrics_from_stats(stats, weight, bias, ncc_mismatch=mismatch, ncc_accuracy=ncc.accuracy())


def nc5(class_means: torch.Tensor, ood_mean: torch.Tensor) -> float:
    """NC5, the ID/OOD orthogonality of Ammar et al. ("NECO", ICLR 2024): mean over the C ID class
    means mu_c (rows of ``class_means``, C x D) of |cos(mu_c, mu_G^OOD)|, with ``ood_mean`` the OOD
    set's mean feature (D), in float64. 0 when the OOD mean is orthogonal to every class mean, 1
    when parallel to all (rhubarbwu/neural-collapse calls it ``orthogonality_deviation``)."""
    if not isinstance(class_means, torch.Tensor) or class_means.dim() != 2:
        raise ValueError("class_means must be a C x D tensor of ID class means")
    if not isinstance(ood_mean, torch.Tensor) or ood_mean.shape != class_means.shape[1:]:
        raise ValueError(f"ood_mean must be a vector of the {class_means.shape[1]} feature dimensions")
    means, ood = class_means.detach().to(torch.float64), ood_mean.detach().to(torch.float64).to(class_means.device)
    norms = means.norm(dim=1) * ood.norm()
    if not bool(torch.isfinite(norms).all()) or bool((norms == 0).any()):
        raise ValueError("nc5 needs finite, non-zero class means and OOD mean (a cosine of a zero vector is undefined)")
    return float(((means @ ood) / norms).abs().mean())


def nc_metrics(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> dict[str, float]:
    """Neural-collapse metrics of in-memory features (N x D) with labels (N); see the module docstring.

    Streams the features in chunks (:func:`stream_nc_metrics`), so that no float64 copy of all of
    them is made. Returns every key of `nc_metrics_from_stats`, including nc4 when `weight` is given.
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError("features must be a 2-D tensor (N x D)")
    _check_labels(labels, features.shape[0], int(num_classes))

    def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, features.shape[0], _CHUNK_ROWS):
            yield features[start:start + _CHUNK_ROWS], labels[start:start + _CHUNK_ROWS]
    return stream_nc_metrics(chunks, num_classes, features.shape[1], weight, bias)


def nc1_replicates(features: torch.Tensor, labels: torch.Tensor, num_classes: int, resamples) -> np.ndarray:
    """NC1 of each bootstrap resample of the samples: ``resamples`` is B x N indices (drawn with
    replacement), the result the B values of ``nc1`` on ``features[idx], labels[idx]``.

    The same formula as :data:`NC_METRICS`' nc1, Tr(Sigma_W Sigma_B^+) / C, computed in the span of
    the centred class means: with Mc = U S V^T (thin SVD), Sigma_B^+ = V diag(C / s_k^2) V^T on the
    r = min(D, C - 1) largest singular values (those below sqrt(PINV_RTOL) s_max dropped, as the
    eigenvalue rule drops them), so NC1 = (1/C) sum_k (C / s_k^2) (1/N) sum_i ((h_i - mu_{y_i}) . v_k)^2:
    one N x D x r product per resample instead of a D x D eigendecomposition. Float64; every class
    needs a sample in every resample."""
    x = features.detach().to(torch.float64)
    y = labels.detach().to(torch.long)
    c, d = int(num_classes), x.shape[1]
    rank = min(d, c - 1)
    out = np.empty(len(resamples))
    for b, idx in enumerate(resamples):
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        xb, yb = x[idx], y[idx]
        counts = torch.bincount(yb, minlength=c).to(torch.float64)
        if bool((counts == 0).any()):
            raise ValueError("a bootstrap resample left a class without samples; use more samples per class")
        means = torch.zeros(c, d, dtype=torch.float64).index_add_(0, yb, xb) / counts[:, None]
        centred = means - means.mean(dim=0)
        _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
        sv, vh = sv[:rank], vh[:rank]
        keep = sv.square() > PINV_RTOL * sv[0].square()
        projected = (xb - means[yb]) @ vh[keep].T
        within = projected.square().mean(dim=0)          # v_k^T Sigma_W v_k
        out[b] = float((within * c / sv[keep].square()).sum()) / c
    return out

