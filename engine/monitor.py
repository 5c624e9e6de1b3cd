"""Per-epoch monitor of neural collapse and DDU's OOD detection during training.

After an epoch, :class:`EpochMonitor` runs the in-memory model (eval mode, no gradient, through
:func:`engine.features.extract`) over the ID training samples (evaluation transform), the ID
test set and each OOD test set, takes the features the classifier reads (the model's
``head_layer``: ``projector``, ``head_input`` with ``l2_features``, else ``encoder``) and returns
one flat dict for the epoch's JSON-lines record:

- every key of :func:`metrics.nc.nc_metrics` on the training features with the model's own
  classifier W, b (``nc1``, ``nc2_equinorm``, ``nc2_equiangle``, ``nc3``, ``nc4``, ...);
- per OOD set ``<label>``: ``auroc_<label>``, the AUROC of DDU's class-conditional Gaussian
  density (``ood.build_scorer('gmm')`` fitted on the training features), and
  ``false_positives_<label>``, see :func:`false_positives`;
- ``n_id_test`` (N_ID) and ``monitor_seconds``.

This follows the NC-loss intervention of Haas, Yolland & Rabus (TMLR 2022), who track NC and the
OOD false positives of DDU while a pretrained model is trained on, with the NC loss or with
cross-entropy at the same learning rate.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.checkpoint import unwrap
from engine.features import extract
from metrics.nc import nc_metrics
from ood import build_scorer, detection_metrics

SCORER = "gmm"


def false_positives(id_scores, ood_scores) -> int:
    """Number of OOD samples among the N_ID highest of the pooled ID + OOD scores (N_ID = number
    of ID samples; higher score = more in-distribution): the OOD samples a detector that flags
    exactly as many samples ID as there are ID samples lets through. A tie is ranked OOD first,
    so it counts against the detector."""
    id_scores = torch.as_tensor(id_scores, dtype=torch.float64).flatten().cpu()
    ood_scores = torch.as_tensor(ood_scores, dtype=torch.float64).flatten().cpu()
    pooled = torch.cat([ood_scores, id_scores])  # OOD first: the stable sort keeps it ahead on ties
    order = torch.sort(pooled, descending=True, stable=True).indices
    return int((order[:id_scores.numel()] < ood_scores.numel()).sum())


class EpochMonitor:
    """NC metrics and GMM detection of one model state (see the module docstring).

    ``train`` and ``test`` are the ID datasets (evaluation transform), ``ood`` maps a label to an
    OOD dataset, ``num_classes`` is the model's C. Datasets yield (image, label) like
    :func:`data.build_dataset`'s.
    """

    def __init__(self, train: Dataset, test: Dataset, ood: dict[str, Dataset], num_classes: int, *,
                 device: str | torch.device = "cpu", batch_size: int = 256, num_workers: int = 0) -> None:
        if not ood:
            raise ValueError("EpochMonitor needs at least one OOD dataset")
        self.sets = {"train": train, "test": test, **{f"ood:{label}": ds for label, ds in ood.items()}}
        self.ood_labels = list(ood)
        self.num_classes = int(num_classes)
        self.device, self.batch_size, self.num_workers = device, batch_size, num_workers

    def __call__(self, model: torch.nn.Module) -> dict:
        t0 = time.perf_counter()
        net = unwrap(model)
        layer = net.head_layer
        feats, labels = {}, {}
        for name, dataset in self.sets.items():
            sink = extract(net, dataset, [layer], device=self.device, batch_size=self.batch_size,
                           num_workers=self.num_workers, show_progress=False)
            feats[name], labels[name] = sink.features[layer], sink.labels
        weight, bias = net.classifier.weight.detach().float().cpu(), net.classifier.bias.detach().float().cpu()
        record = dict(nc_metrics(feats["train"], labels["train"], self.num_classes, weight, bias))
        scorer = build_scorer(SCORER).fit(feats["train"], labels["train"])
        id_scores = scorer.score(feats["test"]).cpu().numpy()
        record["n_id_test"] = int(id_scores.size)
        for label in self.ood_labels:
            ood_scores = scorer.score(feats[f"ood:{label}"]).cpu().numpy()
            record[f"auroc_{label}"] = detection_metrics(id_scores, ood_scores)["auroc"]
            record[f"false_positives_{label}"] = false_positives(id_scores, ood_scores)
        record["monitor_seconds"] = round(time.perf_counter() - t0, 3)
        return record


def cap_per_class(targets, max_per_class: int | None, seed: int = 0) -> np.ndarray:
    """Sorted positions keeping at most ``max_per_class`` samples of each label (drawn by ``seed``);
    all positions when ``max_per_class`` is None."""
    targets = np.asarray(targets)
    if max_per_class is None:
        return np.arange(len(targets))
    if max_per_class < 1:
        raise ValueError(f"monitor_max_per_class must be a positive integer, got {max_per_class}")
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(np.flatnonzero(targets == label))[:max_per_class] for label in np.unique(targets)]
    return np.sort(np.concatenate(kept))
