"""OOD generalization by linear probing: how well each layer's frozen features transfer to new datasets.

The protocol of Harun, Gallardo & Kanan, "Controlling Neural Collapse Enhances Out-of-Distribution
Detection and Transfer Learning" (ICML 2025), as their evaluation code runs it: for every
checkpoint, downstream dataset and layer, the layer's features of the dataset's train split
(pooled one vector per image, see :mod:`engine.features`) train a linear probe that is tested on
the dataset's test split; the probe is :func:`engine.evaluation.probe` - AdamW, lr 1e-3, 30
epochs, batch 256, label smoothing 0.1, tested after every epoch - and the paper reports the best
test top-1 over the epochs (``best_acc``; ``final_acc`` is the last epoch's). ``--probe_solver
lbfgs`` fits an L2-regularized logistic regression instead, the protocol of Kornblith, Shlens &
Le, "Do Better ImageNet Models Transfer Better?" (CVPR 2019). Each (model, layer) also gets an
``average`` row: the unweighted mean of its accuracies over the downstream datasets.

The paper's downstream datasets are NINCO, ImageNet-R, CIFAR-100, Flowers-102, CUB-200,
FGVC-Aircraft, Oxford-IIIT Pet and STL-10 at 224 px (``scripts/train_lp_resnet.sh``); the
embedded default runs on the CPU with Fashion-MNIST's held-out classes 6-9, Animal-MNIST and
digits.
"""
from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from statistics import fmean

from data import DatasetSpec, build_dataset, parse_spec
from engine.config import save_config
from engine.errors import UserError
from engine.evaluation import EVAL_DEFAULTS, EVAL_HELP, EVAL_TYPES, Run, features, open_runs, probe, resolve_layers
from engine.io import text_table, write_results
from engine.plots import metrics_vs_depth
from engine.progress import progress

EMBEDDED_TRANSFER = ["heldout=fashion_mnist:classes=6-9", "animal_mnist", "digits"]
AVERAGE = "average"  # the dataset name of the mean-over-datasets rows

TRANSFER_DEFAULTS = {**EVAL_DEFAULTS, "transfer": list(EMBEDDED_TRANSFER), "test_splits": [],
                     "out_name": "linear_probe"}
TRANSFER_TYPES = {**EVAL_TYPES, "transfer": list[str], "test_splits": list[str]}
TRANSFER_HELP = {
    **EVAL_HELP,
    "dataset": "unused here (the probes need only the downstream datasets); kept so one config file "
               "serves every evaluator",
    "data": "unused here; see --dataset",
    "transfer": "downstream dataset specs, [label=]name[:key=value,...], e.g. "
                "ninco=imagefolder:root=/data/NINCO/NINCO_OOD_classes,holdout=0.2 cifar100:root=/data",
    "test_splits": "LABEL=SPLIT: test the probes of that downstream dataset on SPLIT instead of its test split "
                   "(the paper's Flowers-102 probes: flowers102=val)",
    "out_name": "file name stem of the tables and figure",
}
COLUMNS = ["model", "dataset", "layer", "depth", "dim", "best_acc", "final_acc", "n_train", "n_test"]


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
    splits: dict[str, str] = {}
    for entry in entries:
        label, sep, split = (part.strip() for part in entry.partition("="))
        if not sep or not label or not split:
            raise UserError(f"--test_splits entry {entry!r} is not LABEL=SPLIT; write e.g. flowers102=val")
        if label not in labels:
            raise UserError(f"--test_splits names {label!r}, which is no --transfer label ({', '.join(labels)})")
        if split == "train":
            raise UserError(f"--test_splits {entry}: the probes train on the train split; test them on another one")
        splits[label] = split
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


def probe_dataset(cfg: Namespace, run: Run, spec: DatasetSpec, layers: list[str], test_split: str,
                  bar=None) -> list[dict]:
    """One row per layer: a probe trained on ``spec``'s cached train features of that layer and
    tested after every epoch on its ``test_split`` features (``bar``, a progress bar, advances
    once per layer)."""
    train = features(cfg, run, spec, "train", layers)
    test = features(cfg, run, spec, test_split, layers)
    depth = {name: index for index, name in enumerate(run.layer_names())}
    rows = []
    for layer in layers:
        result = probe(cfg, train, layer, test)
        rows.append({"model": run.name, "dataset": spec.label, "layer": layer, "depth": depth[layer],
                     "dim": train.dim(layer), "best_acc": result.best_acc, "final_acc": result.final_acc,
                     "n_train": len(train), "n_test": len(test)})
        if bar is not None:
            bar.update()
    return rows


def average_rows(rows: list[dict]) -> list[dict]:
    """One ``average`` row per (model, layer): ``best_acc`` and ``final_acc`` averaged, unweighted,
    over that layer's per-dataset rows (``n_train``/``n_test`` left empty)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["dataset"] != AVERAGE:
            groups.setdefault((row["model"], row["layer"]), []).append(row)
    return [{"model": model, "dataset": AVERAGE, "layer": layer, "depth": group[0]["depth"], "dim": group[0]["dim"],
             "best_acc": fmean(r["best_acc"] for r in group), "final_acc": fmean(r["final_acc"] for r in group),
             "n_train": None, "n_test": None}
            for (model, layer), group in groups.items()]


def depth_series(rows: list[dict], metric: str = "best_acc") -> tuple[dict[str, list[dict]], list[str]]:
    """Rows pivoted for :func:`engine.plots.metrics_vs_depth`: ``{model: [{'layer': L, <dataset>:
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
    """Probe every checkpoint x downstream dataset x layer; per model its rows, then its averages."""
    specs = transfer_specs(cfg)
    test_splits = parse_test_splits(cfg.test_splits, [spec.label for spec in specs])
    runs = open_runs(cfg)
    plans = [(run, resolve_layers(cfg, run)) for run in runs]
    check_datasets(cfg, specs, test_splits)  # every user error so far comes before any extraction
    rows: list[dict] = []
    with progress(total=len(specs) * sum(len(layers) for _, layers in plans), desc="linear probes", unit="probe",
                  leave=False) as bar:
        for run, layers in plans:
            model_rows: list[dict] = []
            for spec in specs:
                bar.set_postfix_str(f"{run.name} / {spec.label}")
                model_rows += probe_dataset(cfg, run, spec, layers, test_splits.get(spec.label, "test"), bar)
            rows += model_rows + average_rows(model_rows)
    return rows


def report_transfer(cfg: Namespace, rows: list[dict]) -> dict[str, Path]:
    """Print the table; write ``<out_name>``.json/.csv/.md, the resolved config and the figure of
    best accuracy against layer depth (one panel per dataset and the average, one line per model)."""
    extra = {"config": {k: v for k, v in vars(cfg).items() if k != "config"}}
    paths = write_results(rows, cfg.out_dir, cfg.out_name, columns=COLUMNS, extra=extra)
    paths["config"] = save_config(cfg, Path(cfg.out_dir) / f"{cfg.out_name}.config.yaml")
    print(text_table(rows, COLUMNS))
    series, panels = depth_series(rows, "best_acc")
    which = "best epoch" if cfg.probe_solver == "adamw" else cfg.probe_solver
    paths["png"] = metrics_vs_depth(series, panels, Path(cfg.out_dir) / f"{cfg.out_name}.png",
                                    title=f"linear-probe test top-1 by layer ({which})")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths


__all__ = ["AVERAGE", "COLUMNS", "EMBEDDED_TRANSFER", "TRANSFER_DEFAULTS", "TRANSFER_HELP", "TRANSFER_TYPES",
           "average_rows", "check_datasets", "depth_series", "evaluate_transfer",
           "parse_test_splits", "probe_dataset", "report_transfer", "transfer_specs"]
