"""Bootstrap replicates of the evaluators' per-layer figures, for intervals on what is computed from
them across layers (Figure 1's Pearson R, :mod:`study.summary`).

``--bootstrap B`` (default 200; 0 = off) makes every evaluator add, beside a figure, its B values on
resamples of the samples drawn with replacement: ``nc1_boot`` (eval_nc.py: the split's samples),
``fpr95_boot`` (eval_ood.py: the ID test samples and each OOD set's samples, resampled apart; an
average row averages its sets' replicates), ``best_acc_boot`` (train_lp.py: each downstream test
set's samples, the probe and its best epoch held fixed). Replicate b of a dataset and split is the
same resample at every layer and for every checkpoint (its indices depend only on ``--seed``, the
dataset's label and split, and b), so the B values of a statistic computed across layers pair up.
"""
from __future__ import annotations

import zlib

import numpy as np


def resamples(n: int, replicates: int, seed: int, key: str) -> np.ndarray:
    """``replicates`` x ``n`` indices drawn with replacement, the same for the same (n, seed, key)."""
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8")), n])
    return rng.integers(0, n, size=(replicates, n))


def class_resamples(labels, replicates: int, seed: int, key: str) -> np.ndarray:
    """Like :func:`resamples`, but stratified: each class resampled within itself, so that every
    class keeps its count (the NC statistics need every class in every resample)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8")), len(labels)])
    out = np.empty((replicates, len(labels)), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        out[:, members] = members[rng.integers(0, len(members), size=(replicates, len(members)))]
    return out
