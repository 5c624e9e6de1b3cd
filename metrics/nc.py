"""Neural-collapse statistics and metrics, streamed over batches of features.

Notation: N samples h_i in R^D with labels y_i in {0..C-1}; class means mu_c; global mean
mu_G = (1/C) sum_c mu_c (the mean of the class means, not of the samples); centred means
Mc (C x D) with rows mu_c - mu_G; a linear classifier W (C x D), b (C).

    Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T      within-class covariance
    Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T             between-class covariance
    Sigma_T = Sigma_W + Sigma_B
    r       = min(D, C - 1)                                         rank of Sigma_B in general position

Metrics returned by `nc_metrics` / `nc_metrics_from_stats` (every one is 0 at perfect collapse
onto a simplex ETF whose classifier rows equal the centred means and b = 0):

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

import torch

__all__ = ["PINV_RTOL", "ROUNDING_TOL", "NCStats", "ClassStats", "NCCAccumulator", "nc_metrics", "nc_metrics_from_stats"]

PINV_RTOL = 1e-10
"""Eigenvalues below PINV_RTOL * (largest eigenvalue) count as zero in the pseudo-inverses."""
ROUNDING_TOL = 1e-9
"""A metric bounded by its formula (vci in [0, 1]) is clamped into its bounds when rounding puts it
at most this far outside them."""

_CHUNK_ROWS = 8192  # rows per pass in nc_metrics: bounds the float64 copy of in-memory features


@dataclass(frozen=True)
class NCStats:
    """Class statistics in float64, as defined in the module docstring.

    means (C x D), counts (C, int64), global_mean (D) = mean of the class means,
    sigma_w (D x D, 1/N), sigma_b (D x D, 1/C), class_var (C) = mean squared distance of a
    class's samples to its mean, n = number of samples.
    """

    means: torch.Tensor
    counts: torch.Tensor
    global_mean: torch.Tensor
    sigma_w: torch.Tensor
    sigma_b: torch.Tensor
    class_var: torch.Tensor
    n: int


def _check_features(features: torch.Tensor, dim: int) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[1] != dim:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must be a 2-D tensor of shape (N, {dim}), got {shape}")


def _check_finite(x: torch.Tensor, what: str, fix: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} contain NaN or Inf; {fix}")


def _check_labels(labels: torch.Tensor, n: int, num_classes: int) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != n:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D tensor with one label per feature row ({n}), got {shape}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}], got values in [{int(labels.min())}, {int(labels.max())}];"
            " check num_classes")


class ClassStats:
    """Streaming per-class means and covariances of features (float64, one pass).

    `update(features, labels)` any number of times, then `compute()` -> `NCStats`.

    Numerics: each class c gets a fixed shift s_c, the mean of its samples in the first batch
    that contains it. With y = h - s_{label} the accumulators are n_c, S_c = sum y, Q_c = sum ||y||^2
    and one D x D matrix A = sum y y^T (a single Y^T Y matmul per batch). At compute time, with
    d_c = S_c / n_c:  mu_c = s_c + d_c,  N Sigma_W = A - sum_c n_c d_c d_c^T,  var_c = Q_c/n_c - ||d_c||^2.
    These identities are exact; because every y is measured from a point inside its own class,
    the subtraction cancels only within-class spread, so a large common offset or well separated
    (collapsed) classes cost no precision - the shifted-data form of Chan, Golub & LeVeque's
    updating formulas for variances.

    Args:
        num_classes: C. dim: feature dimension D.
        device: where the accumulators live; default: the device of the first batch.
    """

    def __init__(self, num_classes: int, dim: int, device: torch.device | str | None = None):
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2 for neural-collapse statistics, got {num_classes}")
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.device = torch.device(device) if device is not None else None
        self._ready = False
        if self.device is not None:
            self._allocate(self.device)

    def _allocate(self, device: torch.device) -> None:
        c, d, f64 = self.num_classes, self.dim, torch.float64
        self.device = device
        self._shift = torch.zeros(c, d, dtype=f64, device=device)
        self._count = torch.zeros(c, dtype=torch.int64, device=device)
        self._sum = torch.zeros(c, d, dtype=f64, device=device)
        self._sqnorm = torch.zeros(c, dtype=f64, device=device)
        self._outer = torch.zeros(d, d, dtype=f64, device=device)
        self._ready = True

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: features (N x D, any float dtype/device), labels (N, integer in [0, C))."""
        _check_features(features, self.dim)
        _check_labels(labels, features.shape[0], self.num_classes)
        if features.shape[0] == 0:
            return
        if not self._ready:
            self._allocate(features.device)
        x = features.detach().to(device=self.device, dtype=torch.float64, copy=True)  # shifted in place below
        y_idx = labels.detach().to(device=self.device, dtype=torch.int64)

        batch_count = torch.bincount(y_idx, minlength=self.num_classes)
        new = (self._count == 0) & (batch_count > 0)
        shift = self._shift
        if bool(new.any()):
            batch_sum = torch.zeros_like(self._sum).index_add_(0, y_idx, x)
            shift = shift.clone()
            shift[new] = batch_sum[new] / batch_count[new].unsqueeze(1).to(torch.float64)

        y = x.sub_(shift[y_idx])
        sqnorm = y.square().sum(dim=1)
        if not bool(torch.isfinite(sqnorm).all()):  # NaN/Inf anywhere in a row reaches its squared norm
            bad = int((~torch.isfinite(sqnorm)).sum())
            raise ValueError(f"features contain NaN or Inf ({bad} rows, or values too large to square in float64); "
                             "check the model output or the feature cache")
        self._shift = shift
        self._count += batch_count
        self._sum.index_add_(0, y_idx, y)
        self._sqnorm.index_add_(0, y_idx, sqnorm)
        self._outer.addmm_(y.T, y)

    @torch.no_grad()
    def compute(self) -> NCStats:
        """Return the statistics of everything seen so far; every class needs at least one sample."""
        if not self._ready or int(self._count.sum()) == 0:
            raise ValueError("ClassStats.compute() called before any features were added; call update() first")
        empty = torch.nonzero(self._count == 0).flatten().tolist()
        if empty:
            shown = ", ".join(map(str, empty[:20])) + (", ..." if len(empty) > 20 else "")
            raise ValueError(
                f"{len(empty)} of {self.num_classes} classes have no samples (class ids: {shown}); "
                "pass features of every class or lower num_classes")
        n = int(self._count.sum())
        count = self._count.to(torch.float64)
        delta = self._sum / count.unsqueeze(1)
        means = self._shift + delta
        scatter_w = self._outer - (delta * count.unsqueeze(1)).T @ delta
        sigma_w = 0.5 * (scatter_w + scatter_w.T) / n
        class_var = (self._sqnorm / count - delta.square().sum(dim=1)).clamp_min(0.0)
        global_mean = means.mean(dim=0)
        centred = means - global_mean
        sigma_b = centred.T @ centred / self.num_classes
        return NCStats(means=means, counts=self._count.clone(), global_mean=global_mean,
                       sigma_w=sigma_w, sigma_b=sigma_b, class_var=class_var, n=n)


def _classifier(weight, bias, num_classes: int, dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a linear classifier and return (W, b) in float64 on `device`; b = 0 when omitted."""
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (num_classes, dim):
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a tensor of shape ({num_classes}, {dim}) (classes x features), got {shape}")
    w = weight.detach().to(device=device, dtype=torch.float64)
    if bias is None:
        b = torch.zeros(num_classes, dtype=torch.float64, device=device)
    else:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (num_classes,):
            shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise ValueError(f"bias must be a tensor of shape ({num_classes},), got {shape}")
        b = bias.detach().to(device=device, dtype=torch.float64)
    _check_finite(w, "classifier weights", "check the checkpoint or the probe training")
    _check_finite(b, "classifier biases", "check the checkpoint or the probe training")
    return w, b


class NCCAccumulator:
    """Streaming NC4: disagreement between the nearest-class-centre rule and a linear classifier.

    nc4 = (1/N) #{i : argmin_c ||h_i - mu_c|| != argmax_c (W h_i + b)_c}  [Papyan, Han & Donoho, PNAS 2020].
    Distances are computed in float64 on features and means shifted by the mean of the means
    (distances do not change), so a large common offset costs no precision.

    Args:
        means: class means (C x D), e.g. `ClassStats.compute().means`. weight: W (C x D). bias: b (C) or None.
    """

    def __init__(self, means: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
        if not isinstance(means, torch.Tensor) or means.dim() != 2 or means.shape[0] < 2:
            raise ValueError("means must be a 2-D tensor of class means (C x D) with C >= 2")
        self.device = means.device
        m = means.detach().to(torch.float64)
        _check_finite(m, "class means", "compute them from finite features")
        self._origin = m.mean(dim=0)
        self._centres = m - self._origin
        self._centre_sqnorm = self._centres.square().sum(dim=1)
        self._w, self._b = _classifier(weight, bias, m.shape[0], m.shape[1], self.device)
        self._mismatch = 0
        self._n = 0

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Add a batch of features (N x D, any float dtype/device)."""
        _check_features(features, self._centres.shape[1])
        if features.shape[0] == 0:
            return
        x = features.detach().to(device=self.device, dtype=torch.float64)
        _check_finite(x, "features", "check the model output or the feature cache")
        z = x - self._origin
        nearest = (self._centre_sqnorm - 2.0 * z @ self._centres.T).argmin(dim=1)
        predicted = (x @ self._w.T + self._b).argmax(dim=1)
        self._mismatch += int((nearest != predicted).sum())
        self._n += x.shape[0]

    def compute(self) -> float:
        """Fraction of samples seen so far on which the two rules disagree."""
        if self._n == 0:
            raise ValueError("NCCAccumulator.compute() called before any features were added; call update() first")
        return self._mismatch / self._n


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


def nc_metrics_from_stats(stats: NCStats, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                          ncc_mismatch: float | None = None) -> dict[str, float]:
    """Neural-collapse metrics from `ClassStats.compute()`; formulas and sources in the module docstring.

    Keys: nc1, nc1_cdnv, vci, nc2_equinorm, nc2_equiangle, nc2_etf_error; with `weight` also
    w_equinorm, w_equiangle, w_etf_error, wm_etf_error, nc3, bias_collapse; with `ncc_mismatch`
    (from `NCCAccumulator.compute()`) also nc4.
    """
    means = stats.means
    c, d = means.shape
    rank = min(d, c - 1)
    centred = means - stats.global_mean
    sqnorm = centred.square().sum(dim=1)
    dist2 = (sqnorm[:, None] + sqnorm[None, :] - 2.0 * centred @ centred.T).clamp_min(0.0)
    pair = torch.triu(torch.ones(c, c, dtype=torch.bool, device=means.device), diagonal=1)
    if float(dist2[pair].min()) == 0.0:
        i, j = (int(k) for k in torch.nonzero(pair & (dist2 == 0))[0])
        raise ValueError(f"classes {i} and {j} have the same mean; neural-collapse metrics need distinct "
                         "class means (are the features constant?)")
    var = stats.class_var
    cdnv = ((var[:, None] + var[None, :]) / (2.0 * dist2))[pair].mean()

    sigma_t = stats.sigma_w + stats.sigma_b
    out = {
        "nc1": _trace_pinv_product(stats.sigma_b, stats.sigma_w, rank) / c,
        "nc1_cdnv": float(cdnv),
        "vci": _clamp_rounding(1.0 - _trace_pinv_product(sigma_t, stats.sigma_b, d) / rank, 0.0, 1.0),
        "nc2_equinorm": _equinorm(centred),
        "nc2_equiangle": _equiangle(centred),
        "nc2_etf_error": _etf_error(centred @ centred.T),
    }
    if weight is not None:
        w, b = _classifier(weight, bias, c, d, means.device)
        out.update({
            "w_equinorm": _equinorm(w),
            "w_equiangle": _equiangle(w),
            "w_etf_error": _etf_error(w @ w.T),
            "wm_etf_error": _etf_error(w @ centred.T),
            "nc3": float(torch.linalg.matrix_norm(
                w / torch.linalg.matrix_norm(w) - centred / torch.linalg.matrix_norm(centred)).square()),
            "bias_collapse": float(torch.linalg.vector_norm(w @ stats.global_mean + b)),
        })
    elif bias is not None:
        raise ValueError("bias given without weight; pass the classifier weight too")
    if ncc_mismatch is not None:
        out["nc4"] = float(ncc_mismatch)
    return out


def nc_metrics(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> dict[str, float]:
    """Neural-collapse metrics of in-memory features (N x D) with labels (N); see the module docstring.

    Runs `ClassStats` and, with a classifier, the `NCCAccumulator` pass for nc4, in chunks so
    that no float64 copy of all features is made. Returns every key of `nc_metrics_from_stats`,
    including nc4 when `weight` is given.
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError("features must be a 2-D tensor (N x D)")
    stats_acc = ClassStats(num_classes, features.shape[1], device=features.device)
    _check_labels(labels, features.shape[0], int(num_classes))
    for start in range(0, features.shape[0], _CHUNK_ROWS):
        stats_acc.update(features[start:start + _CHUNK_ROWS], labels[start:start + _CHUNK_ROWS])
    stats = stats_acc.compute()
    mismatch = None
    if weight is not None:
        ncc = NCCAccumulator(stats.means, weight, bias)
        for start in range(0, features.shape[0], _CHUNK_ROWS):
            ncc.update(features[start:start + _CHUNK_ROWS])
        mismatch = ncc.compute()
    return nc_metrics_from_stats(stats, weight, bias, ncc_mismatch=mismatch)
