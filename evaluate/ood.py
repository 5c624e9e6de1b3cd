"""OOD detection layer by layer: scorers fitted on ID training features of a layer, applied to
ID test and OOD features of the same layer, with the detection metrics of ood.metrics.

The default is the paper's protocol: the energy score (logsumexp of the logits, T = 1) of a
linear probe trained on ID training features (official probe recipe), at the encoder and at the
L2-normalized projector output (the paper scripts pass the official CNN hook point, ``last_conv``).
Each OOD set's test split is scored unless ``--ood_splits`` names another (the official code
scores Flowers-102's val split). Any scorer of ``ood.SCORERS`` runs at any layer; ``gmm`` on the
encoder reproduces DDU. ``--logits model`` uses the model's own classifier instead of a probe
(only at the layer it reads).
"""
from __future__ import annotations

from argparse import Namespace

import numpy as np

from core.errors import UserError
from core.plots import score_histograms
from core.progress import progress
from data import DATASETS, parse_spec
from evaluate.runs import (
    EVAL_DEFAULTS,
    EVAL_HELP,
    EVAL_TYPES,
    features,
    head_accuracy,
    id_spec,
    open_runs,
    parse_split_choices,
    probe,
    resolve_layers,
    write_tables,
)
from ood import SCORERS, build_scorer, detection_metrics, fpr95_strict

EMBEDDED_OOD = ["near=fashion_mnist:classes=6-9", "animal_mnist", "digits", "textures"]
OOD_DEFAULTS = {**EVAL_DEFAULTS, "ood": EMBEDDED_OOD, "ood_splits": [], "scorers": ["energy"], "logits": "probe",
                "out_name": "ood", "histograms": True}
OOD_TYPES = {**EVAL_TYPES, "ood": list[str], "ood_splits": list[str], "scorers": list[str]}
OOD_HELP = {**EVAL_HELP,
            "ood": "OOD dataset specs, [label=]name[:key=value,...] (their test split is scored)",
            "ood_splits": "LABEL=SPLIT: score that OOD set's SPLIT instead of its test split, e.g. flowers102=val "
                          "(the official protocol)",
            "layers": "layers to score (default: encoder and projector)",
            "scorers": f"OOD scorers: {', '.join(SCORERS)} (higher score = more in-distribution)",
            "logits": "where logit-based scorers get logits: probe (a linear probe per layer, the paper) or model "
                      "(the model's own classifier, only at the layer it reads)",
            "out_name": "file name stem of the tables and figures",
            "histograms": "draw ID-vs-OOD score histograms per scorer"}
METRIC_KEYS = ["fpr95", "auroc", "aupr_in", "aupr_out", "fpr95_ood_positive", "fpr95_strict"]
TABLE_COLUMNS = ["model", "layer", "scorer", "ood", *METRIC_KEYS, "id_acc"]


OOD_OPTIONS = dict(defaults=OOD_DEFAULTS, types=OOD_TYPES, helps=OOD_HELP)


def run_ood(cfg: Namespace) -> list[dict]:
    """eval_ood.py: score, then print and write the table and histograms; returns the rows."""
    rows, scores = evaluate_ood(cfg)
    report_ood(cfg, rows, scores)
    return rows


def evaluate_ood(cfg: Namespace) -> tuple[list[dict], dict]:
    """Rows (model x layer x scorer x OOD set, plus an 'average' row per model, layer and scorer)
    and the scores behind them (for the histograms)."""
    unknown = [s for s in cfg.scorers if s not in SCORERS]
    if unknown:
        raise UserError(f"unknown scorer(s) {', '.join(unknown)}; choose from {', '.join(SCORERS)}")
    if cfg.logits not in ("probe", "model"):
        raise UserError(f"--logits must be probe or model, got {cfg.logits!r}")
    runs, spec = open_runs(cfg), id_spec(cfg)
    ood_specs = [parse_spec(text) for text in cfg.ood]
    if not ood_specs:
        raise UserError("no OOD dataset given; pass --ood SPEC [SPEC ...]")
    splits = parse_split_choices(cfg.ood_splits, [s.label for s in ood_specs], "--ood_splits", "--ood")
    for ood in ood_specs:
        split, valid = splits.get(ood.label, "test"), DATASETS[ood.name].splits
        if split not in valid:
            raise UserError(f"OOD set {ood.label}: {ood.name} has no {split} split; pick one of {', '.join(valid)} "
                            f"with --ood_splits {ood.label}=SPLIT")
    rows, scores = [], {}
    for run in runs:
        layers = resolve_layers(cfg, run, default=["encoder", "projector"])
        train = features(cfg, run, spec, "train", layers, check_classes=True)
        test = features(cfg, run, spec, "test", layers)
        oods = {s.label: features(cfg, run, s, splits.get(s.label, "test"), layers) for s in ood_specs}
        for layer in progress(layers, desc=f"{run.name}: OOD", leave=False):
            weight = bias = None
            if cfg.logits == "probe":
                result = probe(cfg, train, layer, num_classes=run.num_classes)
                weight, bias = result.weight, result.bias
            elif layer == run.head_layer:
                weight, bias = run.head()
            id_acc = None
            if weight is not None:  # top-1 on the ID test set of the classifier the logit scorers use
                id_acc = head_accuracy(test, layer, weight, bias)
            for name in cfg.scorers:
                scorer = build_scorer(name)
                scorer.fit(train[layer], train.labels, weight=weight, bias=bias)
                id_scores = scorer.score(test[layer]).cpu().numpy()
                per_set = {}
                for label, fs in oods.items():
                    ood_scores = scorer.score(fs[layer]).cpu().numpy()
                    per_set[label] = ood_scores
                    rows.append({"model": run.name, "layer": layer, "scorer": name, "ood": label,
                                 **detection_metrics(id_scores, ood_scores),
                                 "fpr95_strict": fpr95_strict(id_scores, ood_scores), "id_acc": id_acc})
                group = rows[-len(oods):]
                rows.append({"model": run.name, "layer": layer, "scorer": name, "ood": "average",
                             **{k: float(np.mean([r[k] for r in group])) for k in METRIC_KEYS}, "id_acc": id_acc})
                scores[(run.name, layer, name)] = (id_scores, per_set)
    return rows, scores


def report_ood(cfg: Namespace, rows: list[dict], scores: dict) -> dict:
    extra = {"conventions": {"score": "higher = more in-distribution",
                             "fpr95": "fraction of OOD accepted at the threshold keeping 95% of ID (the paper's)",
                             "fpr95_strict": "NC-OOD's own FPR95: OOD scored strictly above the ID score at "
                                             "index round(0.05 n) (ties never counted), for comparison with the paper",
                             "fpr95_ood_positive": "fraction of ID rejected at the threshold catching 95% of OOD "
                                                   "(OpenOOD v1.5)"}}
    paths = write_tables(cfg, rows, TABLE_COLUMNS, extra=extra)
    if cfg.histograms:
        for name in cfg.scorers:
            panels = {f"{model} / {layer}": scores[(model, layer, s)]
                      for (model, layer, s) in scores if s == name}
            paths[f"png_{name}"] = score_histograms(panels, f"{cfg.out_dir}/{cfg.out_name}_{name}_hist.png",
                                                    xlabel=f"{name} score (higher = more in-distribution)")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths
