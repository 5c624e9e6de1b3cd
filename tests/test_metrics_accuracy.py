"""metrics.accuracy: top-k on hand-made logits, streaming equals one shot, clear errors."""
import pytest
import torch

from metrics.accuracy import AccuracyMeter, topk_accuracy


def test_topk_on_hand_made_logits():
    logits = torch.tensor([[0.1, 0.7, 0.2],    # label 1: top-1 hit
                           [0.5, 0.1, 0.4],    # label 2: top-2 hit only
                           [0.2, 0.3, 0.5],    # label 0: top-3 hit only
                           [0.9, 0.05, 0.05]])  # label 0: top-1 hit
    labels = torch.tensor([1, 2, 0, 0])
    assert topk_accuracy(logits, labels, k=(1, 2, 3)) == [0.5, 0.75, 1.0]


def test_meter_over_batches_equals_one_shot():
    torch.manual_seed(0)
    logits, labels = torch.randn(103, 10), torch.randint(0, 10, (103,))
    meter = AccuracyMeter(k=(1, 5))
    for start in range(0, 103, 16):
        meter.update(logits[start:start + 16], labels[start:start + 16])
    assert meter.n == 103
    assert meter.compute() == topk_accuracy(logits, labels, k=(1, 5))


def test_errors():
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        topk_accuracy(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), k=(5,))
    with pytest.raises(ValueError, match="logits"):
        topk_accuracy(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="before any batch"):
        AccuracyMeter().compute()
