"""Neural collapse layer by layer: streamed class statistics of every requested layer's cached
features, NC1-NC4 / CDNV / VCI / ETF errors (metrics.nc), with the model's own classifier at
its layer or, with ``--probe`` (the official protocol), a linear probe per layer.

``--splits train test`` measures the test split too; its ``ncc_acc`` is the nearest-class-centre
accuracy with the *training* class means (on the train split, with its own), i.e. whether the
collapse of the training features generalizes.

``--probe_features LAYER=SOURCE`` trains the probe of LAYER on the features of SOURCE: the
official CNN evaluation measures the projector's statistics before its L2 normalization but
trains that layer's probe on the normalized output (``projector_raw=projector``)."""
from __future__ import annotations

from argparse import Namespace

from core.errors import UserError
from core.plots import metrics_vs_depth
from core.progress import progress
from evaluate.bootstrap import class_resamples
from evaluate.runs import (
    EVAL_DEFAULTS,
    EVAL_HELP,
    EVAL_TYPES,
    features,
    id_spec,
    layer_nc_metrics,
    open_runs,
    parse_split_choices,
    probe,
    resolve_layers,
    write_tables,
)
from features.extract import resolve_layers as resolve_module_layers
from metrics.nc import class_means, metric_keys, nc1_replicates

NC_DEFAULTS = {**EVAL_DEFAULTS, "splits": ["train"], "probe": False, "probe_features": [], "out_name": "nc"}
NC_TYPES = {**EVAL_TYPES, "splits": list[str], "probe_features": list[str]}
NC_HELP = {**EVAL_HELP,
           "splits": "dataset splits to measure (the paper: train)",
           "probe": "classifier metrics from a linear probe trained per layer (the official protocol) "
                    "instead of the model's own head at its layer",
           "probe_features": "LAYER=SOURCE: train the probe of LAYER on the features of SOURCE, e.g. "
                             "projector_raw=projector (the official CNN protocol: statistics before the L2 "
                             "normalization, probe after it)",
           "out_name": "file name stem of the tables and figure"}
TABLE_COLUMNS = ["model", "split", "layer", "dim", "classifier", *metric_keys(table=True)]


NC_OPTIONS = dict(defaults=NC_DEFAULTS, types=NC_TYPES, helps=NC_HELP)


def run_nc(cfg: Namespace) -> list[dict]:
    """eval_nc.py: measure, then print and write the table and figures; returns the rows."""
    rows = evaluate_nc(cfg)
    report_nc(cfg, rows)
    return rows


def probe_sources(cfg: Namespace, run, layers: list[str]) -> dict[str, str]:
    """The layer whose features train each of ``layers``' probe: itself, or SOURCE for an entry
    LAYER=SOURCE of ``--probe_features`` (entries for layers this model lacks, e.g. the projector
    of a baseline, do not apply to it)."""
    sources = parse_split_choices(cfg.probe_features, list(cfg.layers) or layers, "--probe_features", "--layers")
    if sources and not cfg.probe:
        raise UserError("--probe_features chooses the features of the per-layer probes; add --probe")
    chosen = {layer: sources.get(layer, layer) for layer in layers}
    try:
        resolve_module_layers(run.skeleton(), list(chosen.values()))
    except UserError as exc:
        raise UserError(f"{run.name}: --probe_features: {exc}") from None
    return chosen


def evaluate_nc(cfg: Namespace) -> list[dict]:
    runs, spec = open_runs(cfg), id_spec(cfg)
    rows: list[dict] = []
    for run in runs:
        layers = resolve_layers(cfg, run)
        sources = probe_sources(cfg, run, layers)
        probes = {}
        if cfg.probe:
            train = features(cfg, run, spec, "train", list(dict.fromkeys([*layers, *sources.values()])),
                             check_classes=True)
            for layer in progress(layers, desc=f"{run.name}: probes", leave=False):
                if train.dim(sources[layer]) != train.dim(layer):
                    raise UserError(f"--probe_features {layer}={sources[layer]}: {sources[layer]} has "
                                    f"{train.dim(sources[layer])} features, {layer} {train.dim(layer)}; "
                                    f"the probe must fit both")
                probes[layer] = probe(cfg, train, sources[layer])
        centres = training_means(cfg, run, spec, layers) if set(cfg.splits) - {"train"} else {}
        for split in cfg.splits:
            fs = features(cfg, run, spec, split, layers, check_classes=True)
            for depth, layer in enumerate(progress(layers, desc=f"{run.name}: NC ({split})", leave=False)):
                if cfg.probe:
                    weight, bias = probes[layer].weight, probes[layer].bias
                    source = "probe" if sources[layer] == layer else f"probe({sources[layer]})"
                elif layer == run.head_layer:
                    (weight, bias), source = run.head(), "model"
                else:
                    weight = bias = source = None
                row = {"model": run.name, "split": split, "layer": layer, "depth": depth, "dim": fs.dim(layer),
                       "classifier": source, **layer_nc_metrics(fs, layer, weight, bias, centres=centres.get(layer))}
                if cfg.bootstrap:
                    idx = class_resamples(fs.labels.numpy(), cfg.bootstrap, cfg.seed, f"{spec.label}/{split}")
                    row["nc1_boot"] = nc1_replicates(fs[layer], fs.labels, fs.num_classes, idx).tolist()
                rows.append(row)
    return rows


def training_means(cfg: Namespace, run, spec, layers: list[str]) -> dict:
    """The class means of every layer on the training split: the centres of the nearest-class-centre
    accuracy (``ncc_acc``) of the other splits, so that a test split measures whether the training
    collapse generalizes."""
    train = features(cfg, run, spec, "train", layers, check_classes=True)
    return {layer: class_means(lambda: train.iter_batches(layer), train.num_classes, train.dim(layer))
            for layer in layers}


def report_nc(cfg: Namespace, rows: list[dict]) -> dict:
    columns = [k for k in dict.fromkeys(k for r in rows for k in r) if not k.endswith("_boot")]
    paths = write_tables(cfg, rows, columns, shown=TABLE_COLUMNS)
    for split in cfg.splits:
        series = {}
        for row in rows:
            if row["split"] == split:
                series.setdefault(row["model"], []).append(row)
        name = cfg.out_name if len(cfg.splits) == 1 else f"{cfg.out_name}_{split}"
        paths[f"png_{split}"] = metrics_vs_depth(series, metric_keys(table=True), f"{cfg.out_dir}/{name}.png",
                                                 title=f"neural collapse by layer ({split} split)",
                                                 log_metrics=metric_keys(log_scale=True))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths
