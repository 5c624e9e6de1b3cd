"""Top-k classification accuracy, at once or streamed over batches (fractions in [0, 1])."""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["topk_correct", "topk_accuracy", "AccuracyMeter"]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: Sequence[int] = (1,)) -> list[int]:
    """Number of samples whose label is among the k highest logits, for each k.

    logits: (N x C) scores; labels: (N) integer class ids. Ties between logits are broken by
    `torch.topk`.
    """
    if logits.dim() != 2 or labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"expected logits (N x C) and labels (N), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    ks = [int(v) for v in k]
    if not ks or min(ks) < 1 or max(ks) > logits.shape[1]:
        raise ValueError(f"every k must lie in [1, {logits.shape[1]}] (the number of classes), got {ks}")
    top = logits.topk(max(ks), dim=1).indices
    hit = top == labels.to(top.device).unsqueeze(1)
    return [int(hit[:, :v].any(dim=1).sum()) for v in ks]


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: Sequence[int] = (1,)) -> list[float]:
    """Top-k accuracy for each k: fraction of samples whose label is among the k highest logits."""
    if logits.shape[0] == 0:
        raise ValueError("topk_accuracy needs at least one sample")
    return [hits / logits.shape[0] for hits in topk_correct(logits, labels, k)]


class AccuracyMeter:
    """Streaming top-k accuracy: `update(logits, labels)` per batch, `compute()` -> list in the order of k."""

    def __init__(self, k: Sequence[int] = (1,)):
        self.k = tuple(int(v) for v in k)
        self.correct = [0] * len(self.k)
        self.n = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        for i, hits in enumerate(topk_correct(logits, labels, self.k)):
            self.correct[i] += hits
        self.n += logits.shape[0]

    def compute(self) -> list[float]:
        if self.n == 0:
            raise ValueError("AccuracyMeter.compute() called before any batch; call update() first")
        return [hits / self.n for hits in self.correct]
