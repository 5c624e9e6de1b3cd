"""The paper's Table 1 and Figure 1 from the evaluators' results.

Reads ``nc.json`` (eval_nc.py), ``ood.json`` (eval_ood.py) and ``linear_probe.json``
(train_lp.py) from one results folder and writes ``summary.{json,csv,md}``: one row per model
and layer (encoder, projector) with the ID top-1 of the layer's probe, NC1 and VCI (train split),
FPR95 of the energy score per OOD set and their average, and the best probe top-1 per transfer
set and their average. Figures: NC1 by layer for every model; NC1 against FPR95 and against
transfer accuracy across all layers, with Pearson's R between log10(NC1) and the other axis.
:func:`check_claims` tests the paper's claims over seeds; :func:`ood_seed_table` gives the min /
max / mean of a detection metric over seeds of ``ood.json`` files (Haas et al., TMLR 2022).
"""
from __future__ import annotations

from pathlib import Path

from engine.errors import UserError
from engine.io import read_json, text_table, write_results
from engine.plots import metrics_vs_depth, scatter_with_pearson

TABLE_LAYERS = ("encoder", "projector")


def _rows(folder: Path, name: str) -> list[dict]:
    path = folder / f"{name}.json"
    if not path.is_file():
        raise UserError(f"{path} is missing; run the evaluator that writes it first (see scripts/demo.sh)")
    return read_json(path)["rows"]


def layer_table(nc_rows: list[dict], ood_rows: list[dict], lp_rows: list[dict], scorer: str = "energy",
                split: str = "train") -> list[dict]:
    """Every (model, layer) that the three result sets share, in model then depth order."""
    nc = {(r["model"], r["layer"]): r for r in nc_rows if r["split"] == split}
    ood: dict[tuple, dict] = {}
    for r in ood_rows:
        if r["scorer"] == scorer:
            ood.setdefault((r["model"], r["layer"]), {})[r["ood"]] = r
    lp: dict[tuple, dict] = {}
    for r in lp_rows:
        lp.setdefault((r["model"], r["layer"]), {})[r["dataset"]] = r
    rows = []
    for key, n in nc.items():
        if key not in ood or key not in lp:
            continue
        row = {"model": key[0], "layer": key[1], "depth": n["depth"], "id_acc": ood[key]["average"].get("id_acc"),
               "nc1": n["nc1"], "vci": n["vci"]}
        row.update({f"fpr95_{s}": r["fpr95"] for s, r in ood[key].items() if s != "average"})
        row["fpr95_avg"] = ood[key]["average"]["fpr95"]
        row.update({f"lp_{d}": r["best_acc"] for d, r in lp[key].items() if d != "average"})
        row["lp_acc_avg"] = lp[key]["average"]["best_acc"]
        rows.append(row)
    return rows


def summarize(results_dir: str | Path, out_dir: str | Path | None = None, scorer: str = "energy") -> list[dict]:
    results_dir = Path(results_dir)
    out_dir = Path(out_dir or results_dir)
    every_layer = layer_table(_rows(results_dir, "nc"), _rows(results_dir, "ood"), _rows(results_dir, "linear_probe"),
                              scorer=scorer)
    if not every_layer:
        raise UserError(f"{results_dir}: the NC, OOD and probe results share no (model, layer); "
                        f"run the three evaluators on the same checkpoints and layers")
    table = [r for r in every_layer if r["layer"] in TABLE_LAYERS]
    columns = list(dict.fromkeys(k for r in table for k in r if k != "depth"))
    write_results(table, out_dir, "summary", columns=columns, bare_json=True)

    series: dict[str, list[dict]] = {}
    for r in every_layer:
        series.setdefault(r["model"], []).append(r)
    metrics_vs_depth(series, ["nc1", "vci", "fpr95_avg", "lp_acc_avg"], out_dir / "summary_by_layer.png",
                     title="by layer: NC1 and VCI (train), FPR95 (energy, avg), transfer top-1 (avg)",
                     log_metrics=["nc1"])
    points = lambda key: {m: [(r["nc1"], r[key], r["layer"]) for r in rows] for m, rows in series.items()}
    _, r_fpr, _ = scatter_with_pearson(points("fpr95_avg"), out_dir / "nc1_vs_fpr95.png", "NC1 (log scale)",
                                       f"FPR95 ({scorer}, average over OOD sets)", "OOD detection", log_x=True)
    _, r_lp, _ = scatter_with_pearson(points("lp_acc_avg"), out_dir / "nc1_vs_transfer.png", "NC1 (log scale)",
                                      "linear-probe top-1 (average over transfer sets)", "transfer", log_x=True)
    print(text_table(table, columns))
    print(f"Pearson R across all layers: log10(NC1) vs FPR95 {r_fpr:+.2f}; log10(NC1) vs transfer top-1 {r_lp:+.2f}")
    print(f"wrote {out_dir}/summary.json, .csv, .md, summary_by_layer.png, nc1_vs_fpr95.png, nc1_vs_transfer.png")
    return table


CLAIMS = (
    ("entropy regularization leaves the encoder less collapsed (higher NC1) than the baseline's",
     ("ours", "encoder", "nc1"), ">", ("baseline", "encoder", "nc1")),
    ("the projector is more collapsed (lower NC1) than the encoder",
     ("ours", "projector", "nc1"), "<", ("ours", "encoder", "nc1")),
    ("the projector detects OOD better (lower average FPR95) than the baseline's penultimate layer",
     ("ours", "projector", "fpr95_avg"), "<", ("baseline", "encoder", "fpr95_avg")),
    ("the encoder transfers better (higher average probe top-1) than the baseline's",
     ("ours", "encoder", "lp_acc_avg"), ">", ("baseline", "encoder", "lp_acc_avg")),
)


def check_claims(tables: list[list[dict]]) -> list[dict]:
    """The paper's four claims on summary tables of several seeds (models named 'baseline' and
    'ours'): both sides as mean +- std (ddof=1) over the seeds and in how many seeds each holds."""
    import statistics

    def value(table, model, layer, key):
        for row in table:
            if row["model"] == model and row["layer"] == layer:
                return row[key]
        raise UserError(f"a summary has no row for model '{model}', layer '{layer}'; name the checkpoints "
                        f"'baseline' and 'ours' (--names baseline ours)")

    rows = []
    for claim, lhs, op, rhs in CLAIMS:
        a = [value(t, *lhs) for t in tables]
        b = [value(t, *rhs) for t in tables]
        holds = sum((x > y) if op == ">" else (x < y) for x, y in zip(a, b))
        spread = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
        rows.append({"claim": claim, "left": f"{lhs[0]} {lhs[1]} {lhs[2]}", "left_mean": statistics.fmean(a),
                     "left_std": spread(a), "op": op, "right": f"{rhs[0]} {rhs[1]} {rhs[2]}",
                     "right_mean": statistics.fmean(b), "right_std": spread(b),
                     "holds_in": f"{holds}/{len(tables)} seeds"})
    return rows


def summarize_seeds(result_dirs: list[str | Path], out_dir: str | Path) -> list[dict]:
    """Claims over several seeds' results folders (each already summarized); writes claims.{json,csv,md}."""
    tables = []
    for folder in result_dirs:
        path = Path(folder) / "summary.json"
        if not path.is_file():
            raise UserError(f"{path} is missing; run summarize.py --results {folder} first")
        tables.append(read_json(path))
    rows = check_claims(tables)
    write_results(rows, out_dir, "claims", extra={"results": [str(d) for d in result_dirs]})
    print(text_table(rows, ["left", "left_mean", "left_std", "op", "right", "right_mean", "right_std", "holds_in"]))
    return rows


SEED_KEY = ("model", "layer", "scorer", "ood")


def ood_seed_table(ood_files: list[str | Path], metric: str = "auroc") -> list[dict]:
    """Min / max / mean of ``metric`` over seeds for each (model, layer, scorer, ood) of several
    ``ood.json`` files (eval_ood.py), one value per file, as Haas, Yolland & Rabus (TMLR 2022,
    Tables 4 and 5) report AUROC over independently seeded models. The files of one seed may be
    split (e.g. one per model or layer), so a key need not be in every file; ``n_seeds`` counts
    its values. Rows keep the order in which their keys first appear."""
    paths = [Path(f) for f in ood_files]
    repeated = sorted({str(p) for p in paths if paths.count(p) > 1})
    if repeated:
        raise UserError(f"{', '.join(repeated)} given more than once; pass each seed's ood.json once")
    values: dict[tuple, list[float]] = {}
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path} is missing; run eval_ood.py for that seed first (it writes <out_dir>/<out_name>.json)")
        seen = set()
        for row in read_json(path)["rows"]:
            key = tuple(row[k] for k in SEED_KEY)
            if key in seen:
                raise UserError(f"{path} holds two rows for {dict(zip(SEED_KEY, key))}; give each checkpoint a "
                                f"distinct --names")
            seen.add(key)
            if row.get(metric) is None:
                raise UserError(f"{path} has no '{metric}' value for {dict(zip(SEED_KEY, key))}; pick one of "
                                f"{', '.join(k for k, v in row.items() if k not in SEED_KEY and v is not None)}")
            values.setdefault(key, []).append(float(row[metric]))
    return [{**dict(zip(SEED_KEY, key)), "n_seeds": len(v), f"{metric}_min": min(v), f"{metric}_max": max(v),
             f"{metric}_mean": sum(v) / len(v)} for key, v in values.items()]


def summarize_ood_seeds(ood_files: list[str | Path], out_dir: str | Path, metric: str = "auroc",
                        name: str = "ood_seeds") -> list[dict]:
    """:func:`ood_seed_table` written as ``<name>.{json,csv,md}`` under ``out_dir`` and printed."""
    rows = ood_seed_table(ood_files, metric)
    write_results(rows, out_dir, name, extra={"metric": metric, "files": [str(f) for f in ood_files]})
    print(text_table(rows))
    print(f"wrote {out_dir}/{name}.json, .csv, .md")
    return rows
