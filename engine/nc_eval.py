"""Neural collapse layer by layer: streamed class statistics of every requested layer's cached
features, NC1-NC4 / CDNV / VCI / ETF errors (metrics.nc), with the model's own classifier at
its layer or, with ``--probe`` (the official protocol), a linear probe per layer."""
from __future__ import annotations

from argparse import Namespace

from engine.progress import progress

from engine.config import save_config
from engine.evaluation import EVAL_DEFAULTS, EVAL_HELP, EVAL_TYPES, features, id_spec, open_runs, probe, resolve_layers
from engine.io import text_table, write_results
from engine.plots import metrics_vs_depth
from metrics.nc import ClassStats, NCCAccumulator, nc_metrics_from_stats

NC_DEFAULTS = {**EVAL_DEFAULTS, "splits": ["train"], "probe": False, "out_name": "nc"}
NC_TYPES = {**EVAL_TYPES, "splits": list[str]}
NC_HELP = {**EVAL_HELP,
           "splits": "dataset splits to measure (the paper: train)",
           "probe": "classifier metrics from a linear probe trained per layer (the official protocol) "
                    "instead of the model's own head at its layer",
           "out_name": "file name stem of the tables and figure"}
TABLE_COLUMNS = ["model", "split", "layer", "dim", "classifier", "nc1", "nc1_cdnv", "vci", "nc2_etf_error",
                 "w_etf_error", "nc3", "nc4", "bias_collapse"]
PLOT_METRICS = ["nc1", "nc1_cdnv", "vci", "nc2_etf_error", "w_etf_error", "nc3", "nc4", "bias_collapse"]
LOG_METRICS = ["nc1", "nc1_cdnv"]


def layer_metrics(fs, layer: str, weight=None, bias=None, batch_size: int = 8192) -> dict[str, float]:
    """NC metrics of one cached layer, streamed in batches (features never all in memory);
    the NCC agreement (nc4) is a second pass once the class means are known."""
    stats = ClassStats(fs.num_classes, fs.dim(layer))
    for x, y in fs.iter_batches(layer, batch_size):
        stats.update(x, y)
    computed = stats.compute()
    ncc = None
    if weight is not None:
        acc = NCCAccumulator(computed.means, weight, bias)
        for x, _ in fs.iter_batches(layer, batch_size):
            acc.update(x)
        ncc = acc.compute()
    return nc_metrics_from_stats(computed, weight, bias, ncc_mismatch=ncc)


def evaluate_nc(cfg: Namespace) -> list[dict]:
    runs, spec = open_runs(cfg), id_spec(cfg)
    rows: list[dict] = []
    for run in runs:
        layers = resolve_layers(cfg, run)
        probes = {}
        if cfg.probe:
            train = features(cfg, run, spec, "train", layers, check_classes=True)
            for layer in progress(layers, desc=f"{run.name}: probes", leave=False):
                probes[layer] = probe(cfg, train, layer)
        for split in cfg.splits:
            fs = features(cfg, run, spec, split, layers, check_classes=True)
            for depth, layer in enumerate(progress(layers, desc=f"{run.name}: NC ({split})", leave=False)):
                if cfg.probe:
                    weight, bias, source = probes[layer].weight, probes[layer].bias, "probe"
                elif layer == run.head_layer:
                    (weight, bias), source = run.head(), "model"
                else:
                    weight = bias = source = None
                rows.append({"model": run.name, "split": split, "layer": layer, "depth": depth,
                             "dim": fs.dim(layer), "classifier": source,
                             **layer_metrics(fs, layer, weight, bias)})
    return rows


def report_nc(cfg: Namespace, rows: list[dict]) -> dict:
    extra = {"config": {k: v for k, v in vars(cfg).items() if k != "config"}}
    paths = write_results(rows, cfg.out_dir, cfg.out_name, extra=extra)
    save_config(cfg, f"{cfg.out_dir}/{cfg.out_name}.config.yaml")
    print(text_table(rows, TABLE_COLUMNS))
    for split in cfg.splits:
        series = {}
        for row in rows:
            if row["split"] == split:
                series.setdefault(row["model"], []).append(row)
        name = cfg.out_name if len(cfg.splits) == 1 else f"{cfg.out_name}_{split}"
        paths[f"png_{split}"] = metrics_vs_depth(series, PLOT_METRICS, f"{cfg.out_dir}/{name}.png",
                                                 title=f"neural collapse by layer ({split} split)",
                                                 log_metrics=LOG_METRICS)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths
