"""Per-epoch monitor: neural collapse layer by layer, and DDU's OOD detection, during training.

After an epoch, :class:`EpochMonitor` runs the in-memory model (eval mode, no gradient, through
:func:`features.extract.extract`, one pass per dataset) over a fixed set of ID training samples
(evaluation transform) and returns one flat dict for the epoch's JSON-lines record. It measures
either or both of:

- **collapse over training** (``layers``): for each named layer ``<layer>``, ``nc1/<layer>``,
  ``nc1_cdnv/<layer>`` and ``vci/<layer>`` of the training samples (:func:`metrics.nc.nc_metrics`,
  float64 statistics), and ``clean_train_acc1``, the model's top-1 on those samples without
  augmentation (the training error the terminal phase of training drives to zero). A few hundred
  samples suffice for NC1: it reads Sigma_W only inside the (C-1)-dimensional span of the class
  means;
- **OOD detection** (``ood``, with the ID ``test`` set), as Haas, Yolland & Rabus (TMLR 2022) track it
  during their NC-loss intervention: on the features the classifier reads (the model's
  ``head_layer``: ``projector``, ``head_input`` with ``l2_features``, else ``encoder``) every key of
  :func:`metrics.nc.nc_metrics` with the model's own classifier W, b (``nc1``, ``nc3``, ``nc4``, ...),
  and per OOD set ``<label>`` ``auroc_<label>``, the AUROC of DDU's class-conditional Gaussian
  density (``ood.build_scorer('gmm')`` fitted on the training features), and
  ``false_positives_<label>`` (:func:`false_positives`); ``n_id_test`` (N_ID).

``monitor_seconds`` is the monitor's own wall time for the epoch.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from core.checkpoint import unwrap
from features.extract import extract
from metrics.accuracy import topk_accuracy
from metrics.nc import metric_keys, nc_metrics
from ood import build_scorer, detection_metrics

SCORER = "gmm"
COLLAPSE_METRICS = tuple(metric_keys(collapse=True))
LOGITS = "classifier"


def collapse_key(metric: str, layer: str) -> str:
    """The record key of a collapse metric on a layer, e.g. ``nc1/encoder``."""
    return f"{metric}/{layer}"


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
    """Collapse per layer and/or GMM detection of one model state (see the module docstring).

    ``train`` is the ID training set to measure (evaluation transform; cap it, e.g. with
    :func:`cap_per_class`, to keep the monitor cheap), ``num_classes`` the model's C, ``layers``
    the named layers whose collapse is logged, ``ood`` maps a label to an OOD dataset and needs
    the ID ``test`` set. Datasets yield (image, label) like :func:`data.build_dataset`'s.
    """

    def __init__(self, train: Dataset, num_classes: int, *, layers: Sequence[str] = (), test: Dataset | None = None,
                 ood: dict[str, Dataset] | None = None, device: str | torch.device = "cpu", batch_size: int = 256,
                 num_workers: int = 0) -> None:
        self.layers = list(dict.fromkeys(layers))
        self.ood = dict(ood or {})
        if not self.layers and not self.ood:
            raise ValueError("EpochMonitor needs layers to measure or OOD datasets")
        if self.ood and test is None:
            raise ValueError("EpochMonitor's OOD detection needs the ID test set")
        self.train, self.test = train, test
        self.ood_labels = list(self.ood)
        self.num_classes = int(num_classes)
        self.device, self.batch_size, self.num_workers = device, batch_size, num_workers

    def _features(self, net: torch.nn.Module, dataset: Dataset, layers: list[str]):
        sink = extract(net, dataset, layers, device=self.device, batch_size=self.batch_size,
                       num_workers=self.num_workers, show_progress=False)
        return sink.features, sink.labels

    def __call__(self, model: torch.nn.Module) -> dict:
        t0 = time.perf_counter()
        net = unwrap(model)
        head = net.head_layer
        wanted = self.layers + ([LOGITS] if self.layers else []) + ([head] if self.ood else [])
        feats, labels = self._features(net, self.train, list(dict.fromkeys(wanted)))
        record: dict = {}
        for layer in self.layers:
            metrics = nc_metrics(feats[layer], labels, self.num_classes)
            record.update({collapse_key(m, layer): metrics[m] for m in COLLAPSE_METRICS})
        if self.layers:
            record["clean_train_acc1"] = topk_accuracy(feats[LOGITS], labels)[0]
        if self.ood:
            record.update(self._detection(net, feats[head], labels))
        record["monitor_seconds"] = round(time.perf_counter() - t0, 3)
        return record

    def describe(self, record: dict) -> str:
        """One indented line of what ``record`` (from :meth:`__call__`) measured, for the epoch log."""
        parts = []
        if self.layers:
            nc1 = "  ".join(f"{layer} {record[collapse_key('nc1', layer)]:.4g}" for layer in self.layers)
            parts.append(f"nc1 {nc1}  clean train top-1 {record['clean_train_acc1']:.4f}")
        if self.ood:
            fp = ", ".join(f"{label} {record[f'auroc_{label}']:.4f} / {record[f'false_positives_{label}']}"
                           for label in self.ood_labels)
            parts.append(f"head nc1 {record['nc1']:.4g}  nc3 {record['nc3']:.4g}  gmm AUROC / false positives: {fp}")
        return f"  monitor ({record['monitor_seconds']:.2f}s): " + "  |  ".join(parts)

    def _detection(self, net: torch.nn.Module, train_feats: torch.Tensor, train_labels: torch.Tensor) -> dict:
        head = net.head_layer
        weight, bias = net.classifier.weight.detach().float().cpu(), net.classifier.bias.detach().float().cpu()
        record = dict(nc_metrics(train_feats, train_labels, self.num_classes, weight, bias))
        scorer = build_scorer(SCORER).fit(train_feats, train_labels)
        id_scores = scorer.score(self._features(net, self.test, [head])[0][head]).cpu().numpy()
        record["n_id_test"] = int(id_scores.size)
        for label, dataset in self.ood.items():
            ood_scores = scorer.score(self._features(net, dataset, [head])[0][head]).cpu().numpy()
            record[f"auroc_{label}"] = detection_metrics(id_scores, ood_scores)["auroc"]
            record[f"false_positives_{label}"] = false_positives(id_scores, ood_scores)
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
