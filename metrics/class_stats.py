"""Class statistics of features, streamed in float64: the inputs of every NC metric.

:class:`ClassStats` accumulates per-class means, the within-class covariance Sigma_W (1/N),
the between-class covariance Sigma_B (1/C, around the mean of the class means) and each class's
variance, numerically stable for features with a large common offset; :class:`NCCAccumulator`
counts where the nearest class centre and a linear classifier disagree (NC4). The formulas and
the metrics computed from these statistics are in :mod:`metrics.nc`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


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
    """Streaming nearest-class-centre (NCC) statistics of features against given class means.

    nc4 = (1/N) #{i : argmin_c ||h_i - mu_c|| != argmax_c (W h_i + b)_c}, the disagreement between
    the NCC rule and a linear classifier [Papyan, Han & Donoho, PNAS 2020] (with a classifier);
    ncc_acc = (1/N) #{i : argmin_c ||h_i - mu_c|| = y_i}, the accuracy of the NCC rule (with
    labels), e.g. of test features against the training means: whether collapse generalizes
    [Galanti, Gyorgy & Hutter, ICLR 2022]. Distances are computed in float64 on features and means
    shifted by the mean of the means (distances do not change), so a large common offset costs no
    precision.

    Args:
        means: class means (C x D), e.g. `ClassStats.compute().means`. weight: W (C x D) or None.
        bias: b (C) or None.
    """

    def __init__(self, means: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        if not isinstance(means, torch.Tensor) or means.dim() != 2 or means.shape[0] < 2:
            raise ValueError("means must be a 2-D tensor of class means (C x D) with C >= 2")
        self.device = means.device
        m = means.detach().to(torch.float64)
        _check_finite(m, "class means", "compute them from finite features")
        self._origin = m.mean(dim=0)
        self._centres = m - self._origin
        self._centre_sqnorm = self._centres.square().sum(dim=1)
        self._w = self._b = None
        if weight is not None:
            self._w, self._b = _classifier(weight, bias, m.shape[0], m.shape[1], self.device)
        self._mismatch = self._hits = self._n = self._labelled = 0

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Add a batch of features (N x D, any float dtype/device) and, for ncc_acc, their labels."""
        _check_features(features, self._centres.shape[1])
        if features.shape[0] == 0:
            return
        x = features.detach().to(device=self.device, dtype=torch.float64)
        _check_finite(x, "features", "check the model output or the feature cache")
        z = x - self._origin
        nearest = (self._centre_sqnorm - 2.0 * z @ self._centres.T).argmin(dim=1)
        if self._w is not None:
            predicted = (x @ self._w.T + self._b).argmax(dim=1)
            self._mismatch += int((nearest != predicted).sum())
        if labels is not None:
            _check_labels(labels, x.shape[0], self._centres.shape[0])
            self._hits += int((nearest == labels.to(self.device)).sum())
            self._labelled += x.shape[0]
        self._n += x.shape[0]

    def compute(self) -> float:
        """nc4: the fraction of samples seen so far on which the NCC rule and the classifier disagree."""
        if self._n == 0:
            raise ValueError("NCCAccumulator.compute() called before any features were added; call update() first")
        if self._w is None:
            raise ValueError("NCCAccumulator.compute() needs the classifier; pass weight (and bias)")
        return self._mismatch / self._n

    def accuracy(self) -> float:
        """ncc_acc: the fraction of the labelled samples seen so far that the NCC rule classifies right."""
        if self._labelled == 0:
            raise ValueError("NCCAccumulator.accuracy() needs labelled features; pass labels to update()")
        return self._hits / self._labelled
