"""The paper's Table 1 and Figure 1 from the evaluators' results.

Reads ``nc.json`` (eval_nc.py), ``ood.json`` (eval_ood.py) and ``linear_probe.json``
(train_lp.py) from one results folder and writes ``summary.{json,csv,md}``: one row per model
and layer (encoder, projector) with the ID top-1 of the layer's probe, NC1 and VCI (train split),
FPR95 of the energy score per OOD set and their average, and the best probe top-1 per transfer
set and their average. Figures: NC1 by layer for every model; NC1 against FPR95 and against
transfer accuracy across all layers, with Pearson's R between log10(NC1) and the other axis.
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
