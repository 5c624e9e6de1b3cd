"""OOD generalization by linear probing: how well each layer's frozen features transfer to new datasets.

The protocol of Harun, Gallardo & Kanan, "Controlling Neural Collapse Enhances Out-of-Distribution
Detection and Transfer Learning" (ICML 2025), as their evaluation code runs it: for every
checkpoint, downstream dataset and layer, the layer's features of the dataset's train split
(pooled one vector per image, see :mod:`features.extract`) train a linear probe that is tested on
the dataset's test split; the probe is :func:`evaluate.runs.probe` - AdamW, lr 1e-3, 30
epochs, batch 256, label smoothing 0.1, tested after every epoch - and the paper reports the best
test top-1 over the epochs (``best_acc``; ``final_acc`` is the last epoch's). ``--probe_solver
lbfgs`` fits an L2-regularized logistic regression instead, the protocol of Kornblith, Shlens &
Le, "Do Better ImageNet Models Transfer Better?" (CVPR 2019). Each (model, layer) also gets an
``average`` row: the unweighted mean of its accuracies over the downstream datasets.

With ``--id_metrics`` (the default) every row also relates transfer to the in-distribution (ID)
data ``--dataset``, the data the checkpoint was trained on:

- ``id_acc``: the checkpoint's own top-1 on the ID test set - the last ``val_acc1`` of the
  ``history`` pretrain.py stores in the checkpoint (``id_acc_from`` = ``history``), else the
  model's classifier applied to the cached ID test features of its head layer (``head``);
- ``log_odds_gain`` = logit(``best_acc``) - logit(``id_acc``), logit(p) = log(p / (1 - p)) with p
  clipped to [1e-4, 1 - 1e-4] so that 0 % and 100 % stay finite (the log-odds scale on which
  Kornblith, Shlens & Le, CVPR 2019, compare accuracies); in an ``average`` row, the mean of the
  per-dataset gains;
- in ``average`` rows only, the collapse statistics of :data:`metrics.nc.NC_METRICS` (``nc1``, ``nc1_cdnv``, ``vci``) of the layer's ID train features
  (:func:`evaluate.runs.layer_nc_metrics`): how collapsed the layer is on the data it learned,
  the quantity Xu & Liu, "Quantifying the Variability Collapse of Neural Networks" (ICML 2023),
  relate to transferability (``vci_study.py`` correlates them with the gain across checkpoints).

The paper's downstream datasets are NINCO, ImageNet-R, CIFAR-100, Flowers-102, CUB-200,
FGVC-Aircraft, Oxford-IIIT Pet and STL-10 at 224 px (``scripts/train_lp_resnet.sh``); the
embedded default runs on the CPU with Fashion-MNIST's held-out classes 6-9, Animal-MNIST and
digits.
"""
from __future__ import annotations

import math
from argparse import Namespace
from pathlib import Path
from statistics import fmean

import numpy as np

from core.errors import UserError
from core.plots import metrics_vs_depth
from core.progress import progress
from core.tables import AVERAGE
from data import DatasetSpec, build_dataset, parse_spec
from evaluate.bootstrap import resamples
from evaluate.runs import EVAL_DEFAULTS, EVAL_HELP, EVAL_TYPES, Run, features, head_accuracy, id_spec
from evaluate.runs import layer_nc_metrics, open_runs, parse_split_choices, probe, resolve_layers, write_tables
from metrics.nc import metric_keys

EMBEDDED_TRANSFER = ["heldout=fashion_mnist:classes=6-9", "animal_mnist", "digits"]

LOGIT_CLIP = 1e-4  # accuracies are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] before the logit
COLLAPSE_KEYS = tuple(metric_keys(collapse=True))  # ID-train collapse statistics of the average rows

TRANSFER_DEFAULTS = {**EVAL_DEFAULTS, "transfer": list(EMBEDDED_TRANSFER), "test_splits": [], "id_metrics": True,
                     "out_name": "linear_probe"}
TRANSFER_TYPES = {**EVAL_TYPES, "transfer": list[str], "test_splits": list[str]}
TRANSFER_HELP = {
    **EVAL_HELP,
    "dataset": "the in-distribution dataset spec the checkpoints were trained on (for --id_metrics), "
               "e.g. fashion_mnist:classes=0-5 or imagenet100",
    "id_metrics": "also report the checkpoint's ID test top-1, the log-odds gain logit(probe top-1) - logit(ID top-1) "
                  "and VCI / NC1 / CDNV of each layer's ID train features (needs --dataset/--data; "
                  "--no-id_metrics skips them)",
    "transfer": "downstream dataset specs, [label=]name[:key=value,...], e.g. "
                "ninco=imagefolder:root=/data/NINCO/NINCO_OOD_classes,holdout=0.2 cifar100:root=/data",
    "test_splits": "LABEL=SPLIT: test the probes of that downstream dataset on SPLIT instead of its test split "
                   "(the paper's Flowers-102 probes: flowers102=val)",
    "out_name": "file name stem of the tables and figure",
}
COLUMNS = ["model", "dataset", "layer", "depth", "dim", "best_acc", "final_acc", "n_train", "n_test",
           "id_acc", "id_acc_from", "log_odds_gain", *COLLAPSE_KEYS]


TRANSFER_OPTIONS = dict(defaults=TRANSFER_DEFAULTS, types=TRANSFER_TYPES, helps=TRANSFER_HELP)


def run_transfer(cfg: Namespace) -> list[dict]:
    """train_lp.py: probe, then print and write the table and figure; returns the rows."""
    rows = evaluate_transfer(cfg)
    report_transfer(cfg, rows)
    return rows


def logit(p: float) -> float:
    """log(p / (1 - p)) of an accuracy p, with p clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP]
    (so |logit| <= log(1e4 - 1) ~ 9.21 even at 0 % or 100 %)."""
    p = min(max(float(p), LOGIT_CLIP), 1.0 - LOGIT_CLIP)
    return math.log(p / (1.0 - p))


def log_odds_gain(acc: float, id_acc: float) -> float:
    """logit(acc) - logit(id_acc): how much better (> 0) or worse (< 0) a probe does on a
    downstream set than the model does on its own ID test set, on the log-odds scale."""
    return logit(acc) - logit(id_acc)


def transfer_specs(cfg: Namespace) -> list[DatasetSpec]:
    """The downstream datasets of ``--transfer``, with distinct labels."""
    if not cfg.transfer:
        raise UserError("no downstream dataset; pass --transfer SPEC [SPEC ...], e.g. --transfer animal_mnist digits")
    specs = [parse_spec(text) for text in cfg.transfer]
    labels = [spec.label for spec in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise UserError(f"--transfer names {', '.join(repeated)} more than once; give each spec its own label "
                        f"(label=name:...)")
    if AVERAGE in labels:
        raise UserError(f"'{AVERAGE}' labels the mean over the datasets; give that --transfer spec another label")
    return specs


def parse_test_splits(entries: list[str], labels: list[str]) -> dict[str, str]:
    """``['flowers=val']`` -> ``{'flowers': 'val'}``; every label must be a downstream dataset's."""
    splits = parse_split_choices(entries, labels, "--test_splits", "--transfer")
    for label, split in splits.items():
        if split == "train":
            raise UserError(f"--test_splits {label}={split}: the probes train on the train split; "
                            f"test them on another one")
    return splits


def check_datasets(cfg: Namespace, specs: list[DatasetSpec], test_splits: dict[str, str]) -> None:
    """Build both splits of every downstream dataset once (file lists and labels; image files are
    read only later, on access), so a wrong path, a wrong split or splits with different classes
    fail before any feature extraction."""
    for spec in specs:
        test_split = test_splits.get(spec.label, "test")
        kwargs = spec.kwargs(image_size=cfg.image_size, max_per_class=cfg.max_per_class, seed=cfg.seed)
        train, test = (build_dataset(**kwargs, split=split) for split in ("train", test_split))
        if list(train.classes) != list(test.classes):
            only_train = sorted(set(train.classes) - set(test.classes)) or ["-"]
            only_test = sorted(set(test.classes) - set(train.classes)) or ["-"]
            raise UserError(f"'{spec.label}': its train and {test_split} splits have different classes (only in "
                            f"train: {', '.join(only_train[:5])}; only in {test_split}: {', '.join(only_test[:5])}); "
                            f"give both splits the same class folders")


def check_id_dataset(cfg: Namespace, runs: list[Run]) -> DatasetSpec:
    """The ID dataset of ``--dataset``/``--data``, checked (file lists only, nothing extracted) to
    have as many classes as every checkpoint."""
    spec = id_spec(cfg)
    num_classes = build_dataset(**spec.kwargs(image_size=cfg.image_size, max_per_class=cfg.max_per_class,
                                              seed=cfg.seed), split="train").num_classes
    for run in runs:
        if run.num_classes != num_classes:
            raise UserError(f"class-count mismatch: {run.path} was trained on {run.num_classes} classes but the ID "
                            f"dataset '{spec.label}' (--dataset) has {num_classes}; pass the --dataset/--data it was "
                            f"trained on, or --no-id_metrics")
    return spec


def id_accuracy(cfg: Namespace, run: Run, spec: DatasetSpec) -> tuple[float, str]:
    """The checkpoint's own ID test top-1 and where it comes from: the last ``val_acc1`` of its
    training ``history`` (``'history'``), else the argmax of its classifier W h + b on the cached
    ID test features h of its head layer (``'head'``)."""
    accs = [record["val_acc1"] for record in run.history if record.get("val_acc1") is not None]
    if accs:
        return float(accs[-1]), "history"
    test = features(cfg, run, spec, "test", [run.head_layer], check_classes=True)
    return head_accuracy(test, run.head_layer, *run.head()), "head"


def id_collapse(cfg: Namespace, run: Run, spec: DatasetSpec, layers: list[str]) -> dict[str, dict[str, float]]:
    """``{layer: {'vci', 'nc1', 'nc1_cdnv'}}`` of the cached ID train features (formulas in :mod:`metrics.nc`)."""
    train = features(cfg, run, spec, "train", layers, check_classes=True)
    collapse = {}
    for layer in layers:
        metrics = layer_nc_metrics(train, layer)
        collapse[layer] = {key: metrics[key] for key in COLLAPSE_KEYS}
    return collapse


def probe_dataset(cfg: Namespace, run: Run, spec: DatasetSpec, layers: list[str], test_split: str,
                  bar=None, id_acc: tuple[float, str] | None = None) -> list[dict]:
    """One row per layer: a probe trained on ``spec``'s cached train features of that layer and
    tested after every epoch on its ``test_split`` features (``bar``, a progress bar, advances
    once per layer). With ``id_acc`` = (ID top-1, its source) the rows carry it and their
    ``log_odds_gain``."""
    train = features(cfg, run, spec, "train", layers)
    test = features(cfg, run, spec, test_split, layers)
    depth = run.layer_depths(layers)
    idx = resamples(len(test), cfg.bootstrap, cfg.seed, f"{spec.label}/{test_split}") if cfg.bootstrap else None
    rows = []
    for layer in layers:
        result = probe(cfg, train, layer, test)
        rows.append({"model": run.name, "dataset": spec.label, "layer": layer, "depth": depth[layer],
                     "dim": train.dim(layer), "best_acc": result.best_acc, "final_acc": result.final_acc,
                     "n_train": len(train), "n_test": len(test), **id_columns(result.best_acc, id_acc)})
        if idx is not None and result.best_correct is not None:  # the best epoch's hits on resampled test sets
            rows[-1]["best_acc_boot"] = result.best_correct[idx].mean(axis=1).tolist()
        if bar is not None:
            bar.update()
    return rows


def id_columns(best_acc: float, id_acc: tuple[float, str] | None) -> dict:
    """The ``id_acc``, ``id_acc_from`` and ``log_odds_gain`` of a per-dataset row (None without ``id_acc``)."""
    if id_acc is None:
        return {"id_acc": None, "id_acc_from": None, "log_odds_gain": None}
    return {"id_acc": id_acc[0], "id_acc_from": id_acc[1], "log_odds_gain": log_odds_gain(best_acc, id_acc[0])}


def average_rows(rows: list[dict], collapse: dict[tuple[str, str], dict[str, float]] | None = None) -> list[dict]:
    """One ``average`` row per (model, layer): ``best_acc``, ``final_acc`` and ``log_odds_gain``
    averaged, unweighted, over that layer's per-dataset rows (``n_train``/``n_test`` left empty;
    the gain None when a row lacks it), ``id_acc`` carried over, and the ID collapse statistics
    ``collapse[(model, layer)]`` (None when not given)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["dataset"] != AVERAGE:
            groups.setdefault((row["model"], row["layer"]), []).append(row)
    averages = []
    for (model, layer), group in groups.items():
        gains = [r.get("log_odds_gain") for r in group]
        averages.append({"model": model, "dataset": AVERAGE, "layer": layer, "depth": group[0]["depth"],
                         "dim": group[0]["dim"], "best_acc": fmean(r["best_acc"] for r in group),
                         "final_acc": fmean(r["final_acc"] for r in group), "n_train": None, "n_test": None,
                         "id_acc": group[0].get("id_acc"), "id_acc_from": group[0].get("id_acc_from"),
                         "log_odds_gain": None if None in gains else fmean(gains),
                         **(collapse or {}).get((model, layer), dict.fromkeys(COLLAPSE_KEYS))})
        if all("best_acc_boot" in r for r in group):
            averages[-1]["best_acc_boot"] = np.mean([r["best_acc_boot"] for r in group], axis=0).tolist()
    return averages


def depth_series(rows: list[dict], metric: str = "best_acc") -> tuple[dict[str, list[dict]], list[str]]:
    """Rows pivoted for :func:`core.plots.metrics_vs_depth`: ``{model: [{'layer': L, <dataset>:
    metric, ...} per layer in depth order]}`` and the panels (datasets in first-seen order, the
    average last)."""
    series: dict[str, dict[str, dict]] = {}
    panels: list[str] = []
    for row in sorted(rows, key=lambda r: r["depth"]):
        point = series.setdefault(row["model"], {}).setdefault(row["layer"], {"layer": row["layer"]})
        point[row["dataset"]] = row[metric]
        if row["dataset"] not in panels:
            panels.append(row["dataset"])
    if AVERAGE in panels:
        panels = [p for p in panels if p != AVERAGE] + [AVERAGE]
    return {model: list(points.values()) for model, points in series.items()}, panels


def evaluate_transfer(cfg: Namespace) -> list[dict]:
    """Probe every checkpoint x downstream dataset x layer; per model its rows, then its averages
    (with ``cfg.id_metrics``, the ID columns of the module docstring)."""
    specs = transfer_specs(cfg)
    test_splits = parse_test_splits(cfg.test_splits, [spec.label for spec in specs])
    runs = open_runs(cfg)
    plans = [(run, resolve_layers(cfg, run)) for run in runs]
    check_datasets(cfg, specs, test_splits)
    id_data = check_id_dataset(cfg, runs) if cfg.id_metrics else None  # every user error comes before any extraction
    rows: list[dict] = []
    with progress(total=len(specs) * sum(len(layers) for _, layers in plans), desc="linear probes", unit="probe",
                  leave=False) as bar:
        for run, layers in plans:
            id_acc = id_accuracy(cfg, run, id_data) if id_data is not None else None
            model_rows: list[dict] = []
            for spec in specs:
                bar.set_postfix_str(f"{run.name} / {spec.label}")
                model_rows += probe_dataset(cfg, run, spec, layers, test_splits.get(spec.label, "test"), bar, id_acc)
            collapse = None
            if id_data is not None:
                collapse = {(run.name, layer): stats for layer, stats in id_collapse(cfg, run, id_data, layers).items()}
            rows += model_rows + average_rows(model_rows, collapse)
    return rows


def report_transfer(cfg: Namespace, rows: list[dict]) -> dict[str, Path]:
    """Print the table; write ``<out_name>``.json/.csv/.md, the resolved config and the figure of
    best accuracy against layer depth (one panel per dataset and the average, one line per model)."""
    paths = write_tables(cfg, rows, COLUMNS)
    series, panels = depth_series(rows, "best_acc")
    which = "best epoch" if cfg.probe_solver == "adamw" else cfg.probe_solver
    paths["png"] = metrics_vs_depth(series, panels, Path(cfg.out_dir) / f"{cfg.out_name}.png",
                                    title=f"linear-probe test top-1 by layer ({which})")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths
