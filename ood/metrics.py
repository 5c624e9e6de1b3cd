"""OOD detection metrics from two score arrays (higher score = more in-distribution).

`detection_metrics(id_scores, ood_scores)` returns floats in [0, 1], computed in float64 with
scikit-learn (`roc_curve(drop_intermediate=False)`, `roc_auc_score`, `precision_recall_curve`,
`auc`):

    auroc       P(s_id > s_ood) + 1/2 P(s_id = s_ood)  over all (ID, OOD) pairs.
    aupr_in     area under the precision-recall curve with ID as the positive class (score s),
                by the trapezoid rule over sklearn's curve (which ends at recall 0, precision 1).
    aupr_out    the same with OOD as the positive class (score -s).
    fpr95       [ID positive; the paper's and NC-OOD's convention] the threshold t is the largest
                score that keeps >= 95% of ID samples (s >= t), i.e. the first point of
                sklearn's ROC curve with TPR >= 0.95; value = fraction of OOD samples accepted,
                s_ood >= t. A sample exactly at t counts as accepted (sklearn's roc_curve rule).
    fpr95_ood_positive
                [OOD positive; OpenOOD v1.5's and pytorch-ood's convention] scores are negated,
                t' is the first ROC point whose TPR over OOD samples is >= 0.95 (catches 95% of
                OOD samples, -s >= t'); value = fraction of ID samples rejected, -s_id >= t'.

Ties and NC-OOD: the paper's evaluation (`ood_det/metrics.py` in yousuf907/NC-OOD, `get_curve`)
takes t = sorted_ascending(ID scores)[round(0.05 * n_id)] (Python's round) and reports
FPR = mean(s_ood > t) with a strict '>'. OOD samples that tie with t are therefore never counted,
so it under-reports when scores saturate: with MSP = 1.0 for 19 of 20 ID samples and for 3 of
10 OOD samples, t = 1.0 and it reports 0.0 where `fpr95` here reports 0.3. Its threshold is
the same ID score as here when round(0.05 * n_id) = floor(0.05 * n_id) (e.g. n_id a multiple
of 20); otherwise it is the next ID score up and keeps slightly fewer than 95% of ID samples.
:func:`fpr95_strict` computes that number, to compare with the paper's tables.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

RECALL_LEVEL = 0.95


def _as_float64_array(scores, name: str) -> np.ndarray:
    """Scores (tensor on any device, array or sequence) -> 1-D float64 numpy array, checked."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per sample), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty; detection metrics need at least one score per side")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(array)).sum())} NaN/inf scores; fix the scorer or drop those samples")
    return array


def _fpr_at_tpr(positive: np.ndarray, scores: np.ndarray, level: float) -> float:
    """FPR at the first (highest) threshold of sklearn's ROC curve reaching TPR >= level."""
    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    return float(fpr[np.argmax(tpr >= level)])


def _aupr(positive: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(positive, scores)
    return float(auc(recall, precision))


def detection_metrics(id_scores, ood_scores) -> dict[str, float]:
    """auroc, aupr_in, aupr_out, fpr95, fpr95_ood_positive for ID vs OOD scores (see module doc)."""
    id_scores = _as_float64_array(id_scores, "id_scores")
    ood_scores = _as_float64_array(ood_scores, "ood_scores")
    scores = np.concatenate([id_scores, ood_scores])
    is_id = np.concatenate([np.ones(id_scores.size), np.zeros(ood_scores.size)])
    return {
        "auroc": float(roc_auc_score(is_id, scores)),
        "aupr_in": _aupr(is_id, scores),
        "aupr_out": _aupr(1.0 - is_id, -scores),
        "fpr95": _fpr_at_tpr(is_id, scores, RECALL_LEVEL),
        "fpr95_ood_positive": _fpr_at_tpr(1.0 - is_id, -scores, RECALL_LEVEL),
    }


def fpr95_strict(id_scores, ood_scores) -> float:
    """NC-OOD's FPR95 (``ood_det/metrics.py``, ``get_curve``), kept for comparison with the paper's
    tables: t = ascending ID scores at index round(0.05 * n_id) (Python's round, halves to even),
    value = fraction of OOD samples with s_ood > t (strict, so OOD samples tied with t are never
    counted; see the module doc). ``fpr95`` of :func:`detection_metrics` is the tie-safe number."""
    id_scores = np.sort(_as_float64_array(id_scores, "id_scores"))
    ood_scores = _as_float64_array(ood_scores, "ood_scores")
    threshold = id_scores[round(0.05 * id_scores.size)]
    return float(np.mean(ood_scores > threshold))


def fpr95_replicates(id_scores, ood_scores, id_resamples, ood_resamples) -> np.ndarray:
    """``fpr95`` of :func:`detection_metrics` on each bootstrap resample: ``id_resamples`` (B x n)
    and ``ood_resamples`` (B x m) index the two score arrays; vectorized over the B resamples.
    The threshold is the k-th largest resampled ID score, k the smallest count with k / n >= 0.95
    (the first ROC point reaching TPR >= 0.95), and the value the fraction of resampled OOD scores
    at or above it."""
    id_scores = _as_float64_array(id_scores, "id_scores")
    ood_scores = _as_float64_array(ood_scores, "ood_scores")
    ids = -np.sort(-id_scores[np.asarray(id_resamples)], axis=1)   # B x n, descending
    n = ids.shape[1]
    k = int(np.argmax(np.arange(1, n + 1) / n >= RECALL_LEVEL))  # index of the k-th largest
    threshold = ids[:, k]
    return (ood_scores[np.asarray(ood_resamples)] >= threshold[:, None]).mean(axis=1)

