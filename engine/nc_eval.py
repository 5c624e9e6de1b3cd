"""Neural collapse layer by layer: streamed class statistics of every requested layer's cached
features, NC1-NC4 / CDNV / VCI / ETF errors (metrics.nc), with the model's own classifier at
its layer or, with ``--probe`` (the official protocol), a linear probe per layer.

``--probe_features LAYER=SOURCE`` trains the probe of LAYER on the features of SOURCE: the
official CNN evaluation measures the projector's statistics before its L2 normalization but
trains that layer's probe on the normalized output (``projector_raw=projector``)."""
from __future__ import annotations

from argparse import Namespace

from engine.progress import progress

from engine.config import save_config
from engine.errors import UserError
from engine.evaluation import (EVAL_DEFAULTS, EVAL_HELP, EVAL_TYPES, features, id_spec, open_runs, parse_split_choices,
                               probe, resolve_layers)
from engine.features import resolve_layers as resolve_module_layers
from engine.io import text_table, write_results
from engine.plots import metrics_vs_depth
from metrics.nc import ClassStats, NCCAccumulator, nc_metrics_from_stats

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
