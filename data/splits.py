"""Class splits (in-distribution vs held-out), stratified train/test splits and sample selection.

All randomness comes from ``numpy.random.default_rng(seed)``, so the same seed gives the same
split on every platform.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

#: Embedded protocol: a network is trained on Fashion-MNIST classes 0-5 (T-shirt/top, Trouser,
#: Pullover, Dress, Coat, Sandal); classes 6-9 (Shirt, Sneaker, Bag, Ankle boot) are held out
#: as near-OOD data for detection and as new classes for transfer (linear probing).
EMBEDDED_ID_CLASSES = [0, 1, 2, 3, 4, 5]
EMBEDDED_HELDOUT_CLASSES = [6, 7, 8, 9]


def class_split(num_classes: int, num_id: int, seed: int | None = None) -> tuple[list[int], list[int]]:
    """Split class indices 0..num_classes-1 into (in-distribution, held-out), each sorted.

    ``seed=None``: the first ``num_id`` classes are in-distribution and the rest held out.
    Otherwise the in-distribution classes are the first ``num_id`` of a permutation drawn by ``seed``.
    """
    if not 0 < num_id < num_classes:
        raise ValueError(f"class_split: num_id must be in 1..{num_classes - 1} for {num_classes} classes, got {num_id}")
    order = np.arange(num_classes) if seed is None else np.random.default_rng(seed).permutation(num_classes)
    return sorted(int(c) for c in order[:num_id]), sorted(int(c) for c in order[num_id:])


def stratified_split(targets, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per class, put ``round(test_fraction * n_c)`` samples (at least 1 and at most n_c - 1 when
    n_c >= 2; none when n_c = 1) drawn by ``seed`` into the test part. Returns sorted
    (train_indices, test_indices)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        n_test = 0 if len(members) < 2 else min(max(round(test_fraction * len(members)), 1), len(members) - 1)
        test.append(rng.permutation(members)[:n_test])
    test_indices = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train_mask = np.ones(len(targets), dtype=bool)
    train_mask[test_indices] = False
    return np.flatnonzero(train_mask), test_indices


def select_indices(targets: torch.Tensor, num_classes: int, classes: Sequence[int] | None = None,
                   max_per_class: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the samples to keep and their new labels.

    ``classes``: original class indices to keep, relabelled 0..k-1 in the given order (None keeps all).
    ``max_per_class``: per kept class, at most this many samples, drawn by ``seed``; kept
    samples stay in their original order.
    """
    targets = torch.as_tensor(targets, dtype=torch.long).cpu()
    if classes is None:
        classes = list(range(num_classes))
    else:
        classes = [int(c) for c in classes]
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad or len(set(classes)) != len(classes) or not classes:
            raise ValueError(f"classes must be distinct indices in 0..{num_classes - 1}, got {classes}")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be a positive integer, got {max_per_class}")
    rng = np.random.default_rng(seed)
    new_label = torch.full((num_classes,), -1, dtype=torch.long)
    kept = []
    for position, c in enumerate(classes):
        new_label[c] = position
        members = torch.nonzero(targets == c).flatten().numpy()
        if max_per_class is not None and len(members) > max_per_class:
            members = rng.permutation(members)[:max_per_class]
        kept.append(members)
    indices = torch.from_numpy(np.sort(np.concatenate(kept))).long()
    return indices, new_label[targets[indices]]
