"""The paper's Table 1, Figure 1, its claims and the curves of training, from the evaluators' results.

Reads ``nc.json`` (eval_nc.py), ``ood.json`` (eval_ood.py) and ``linear_probe.json``
(train_lp.py) from one results folder, or from several merged (the paper chain writes one per
model, ``results/<expt_name>/``), and writes ``summary.{json,csv,md}``: one row per model and
layer of :data:`TABLE_LAYERS` (the hook points ``last_conv`` and ``encoder``, the projector
before and after its L2 normalization) with the ID top-1 of the layer's probe, NC1 and VCI
(train split), FPR95 of the energy score per OOD set and their average, and the best probe
top-1 per transfer set and their average. Results of one model made from different checkpoints
(the SHA-256 each result file records) are refused. Figures: NC1 by layer for every model; NC1
against FPR95 and against transfer accuracy across all layers, with Pearson's R between
log10(NC1) and the other axis and its bootstrap interval over samples (:mod:`study.figure1`). For each pair of a baseline and its NC-controlled model (the
demo's ``baseline`` and ``ours``; the paper chain's ``<name>_baseline`` and ``<name>_nc``) it
checks the paper's four claims on that seed (:mod:`study.claims`), prints them in words and
writes ``claims.json``; with the training logs (``runs``) it copies their per-epoch records to
``curves.json`` and draws ``nc1_over_training.png``.

:func:`summarize_seeds` does the same over several seeds' folders: the claims with paired
differences and confidence intervals, the 2 x 2 ablation, Figure 1's R over seeds with its
interval, and the curves as mean +- std bands.
:func:`ood_seed_table` gives the min / max / mean of a detection metric over seeds of
``ood.json`` files (Haas et al., TMLR 2022).
"""
from __future__ import annotations

import json
from pathlib import Path

from core.errors import UserError
from core.io import atomic_write_text, iter_jsonl, read_json
from core.plots import curves_over_training, metrics_vs_depth
from core.tables import text_table, write_results
from study import claims as C
from study.figure1 import figure1_over_seeds, write_figure1

TABLE_LAYERS = ("last_conv", "encoder", "projector_raw", "projector")


RESULT_FILES = ("nc", "ood", "linear_probe")


def _result_file(folder: Path, name: str) -> dict:
    path = folder / f"{name}.json"
    if not path.is_file():
        raise UserError(f"{path} is missing; run the evaluator that writes it first (see scripts/demo.sh)")
    return read_json(path)


def _same_checkpoint(sources: dict[str, tuple[str, Path]], model: str, record: dict, path: Path) -> None:
    """Refuse results of ``model`` made from two different checkpoints (the SHA-256 each result file records)."""
    sha = record.get("sha256")
    if sha is None:
        return
    first = sources.setdefault(model, (sha, path))
    if first[0] != sha:
        raise UserError(f"{model}: {first[1]} was made from the checkpoint with SHA-256 {first[0][:12]}... but {path} "
                        f"from {record.get('path', 'another file')} ({sha[:12]}...); evaluate every task on one "
                        f"checkpoint (rerun the older results)")


def read_results(folders: list[Path]) -> dict[str, list[dict]]:
    """The rows of ``nc.json``, ``ood.json`` and ``linear_probe.json`` of every folder, merged. A model's
    results of one kind must come from one folder, and all of a model's results from one checkpoint
    where the files record it (``checkpoints``: ``{model: {path, sha256}}``; older files without it
    are taken as they are); either mistake is a one-line UserError naming both files."""
    rows: dict[str, list[dict]] = {name: [] for name in RESULT_FILES}
    owner: dict[tuple[str, str], Path] = {}
    sources: dict[str, tuple[str, Path]] = {}
    for folder in folders:
        for name in RESULT_FILES:
            path = folder / f"{name}.json"
            content = _result_file(folder, name)
            for model, record in (content.get("checkpoints") or {}).items():
                _same_checkpoint(sources, model, record, path)
            for row in content["rows"]:
                first = owner.setdefault((name, row["model"]), path)
                if first != path:
                    raise UserError(f"{row['model']} has {name} results in both {first} and {path}; pass one "
                                    f"of the folders, or name the checkpoints apart (--names)")
                rows[name].append(row)
    return rows


def _table_row(model: str, layer: str, n: dict, ood: dict, lp: dict, replicates: dict | None) -> dict:
    """One row of Table 1; the point's bootstrap replicates (where the evaluators wrote them) go to
    ``replicates[(model, layer)]``, for Figure 1's interval."""
    row = {"model": model, "layer": layer, "depth": n["depth"], "id_acc": ood["average"].get("id_acc"),
           "nc1": n["nc1"], "vci": n["vci"]}
    row.update({f"fpr95_{s}": r["fpr95"] for s, r in ood.items() if s != "average"})
    row["fpr95_avg"] = ood["average"]["fpr95"]
    row.update({f"lp_{d}": r["best_acc"] for d, r in lp.items() if d != "average"})
    row["lp_acc_avg"] = lp["average"]["best_acc"]
    if replicates is not None:
        replicates[(model, layer)] = {"nc1": n.get("nc1_boot"), "fpr95": ood["average"].get("fpr95_boot"),
                                      "lp": lp["average"].get("best_acc_boot")}
    return row


def layer_table(nc_rows: list[dict], ood_rows: list[dict], lp_rows: list[dict], scorer: str = "energy",
                split: str = "train", replicates: dict | None = None) -> list[dict]:
    """Every (model, layer) that the three result sets share, in model then depth order. Where the
    official protocol reads the projector at two layers, NC and transfer before its L2 normalization
    (``projector_raw``, evaluated by neither the OOD run) and OOD detection after it (``projector``,
    evaluated by neither of the others), as the paper's CNN scripts do, the two make one ``projector``
    row: NC1, VCI and transfer of ``projector_raw``, ID top-1 and FPR95 of ``projector``."""
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
        model, layer = key
        if key in ood and key in lp:
            rows.append(_table_row(model, layer, n, ood[key], lp[key], replicates))
        elif layer == "projector_raw" and key in lp and (model, "projector") in ood and (model, "projector") not in nc:
            rows.append(_table_row(model, "projector", n, ood[(model, "projector")], lp[key], replicates))
    return rows


def summarize(results_dirs: str | Path | list, out_dir: str | Path | None = None, scorer: str = "energy",
              runs: str | Path | None = None) -> list[dict]:
    """Table 1, Figure 1 and the claims of one results folder, or of several merged (``out_dir`` then required)."""
    folders = [Path(d) for d in ([results_dirs] if isinstance(results_dirs, (str, Path)) else results_dirs)]
    if len(folders) > 1 and out_dir is None:
        raise UserError(f"{len(folders)} results folders make one table; say where it goes with --out_dir")
    out_dir = Path(out_dir or folders[0])
    results = read_results(folders)
    replicates: dict = {}
    every_layer = layer_table(results["nc"], results["ood"], results["linear_probe"], scorer=scorer,
                              replicates=replicates)
    if not every_layer:
        raise UserError(f"{', '.join(map(str, folders))}: the NC, OOD and probe results share no (model, layer); "
                        f"run the three evaluators on the same checkpoints and layers")
    points = [{**r, "boot": replicates[(r["model"], r["layer"])]} for r in every_layer]
    table = [r for r in every_layer if r["layer"] in TABLE_LAYERS]
    columns = list(dict.fromkeys(k for r in table for k in r if k != "depth"))
    write_results(table, out_dir, "summary", columns=columns, bare_json=True)

    series: dict[str, list[dict]] = {}
    for r in every_layer:
        series.setdefault(r["model"], []).append(r)
    metrics_vs_depth(series, ["nc1", "vci", "fpr95_avg", "lp_acc_avg"], out_dir / "summary_by_layer.png",
                     title="by layer: NC1 and VCI (train), FPR95 (energy, avg), transfer top-1 (avg)",
                     log_metrics=["nc1"])
    print(text_table(table, columns))
    write_figure1(points, out_dir, scorer)
    written = ["summary.json, .csv, .md", "summary_by_layer.png", "nc1_vs_fpr95.png", "nc1_vs_transfer.png",
               "figure1.json"]
    written += report_claims(table, out_dir)
    if runs is not None:
        curves = training_curves(runs, list(series))
        atomic_write_text(out_dir / "curves.json", json_text({"runs": str(runs), "models": curves}))
        draw_collapse_over_training({m: [records] for m, records in curves.items()}, out_dir / "nc1_over_training.png",
                                    title="collapse over training (one seed)")
        written += ["curves.json", "nc1_over_training.png"]
    print(f"wrote in {out_dir}: {', '.join(written)}")
    return table


def report_claims(table: list[dict], out_dir: Path) -> list[str]:
    """Print the four claims of every pair of models in ``table`` and write ``claims.json``; the files written.
    The embedded demo's pair (``baseline``, ``ours``) is checked at every hook point both have, and its
    ``claims.json`` holds the four claims at the first; each pair ``<name>_baseline``, ``<name>_nc`` (the
    paper chain's) is checked at its first hook point, and ``claims.json`` then lists every pair's claims,
    each with its ``pair`` (``<name>``)."""
    pairs = C.model_pairs([r["model"] for r in table])
    if not pairs:
        return []
    if [p[0] for p in pairs] == [""]:
        hooks = C.hooks_in([table])
        if not hooks:
            return []
        by_hook = {hook: C.seed_claims(table, hook) for hook in hooks}
        for hook, claims in by_hook.items():
            print(f"The paper's claims on this seed, encoder read at {hook} ({C.hook_words(hook)}):")
            print(C.describe_seed_claims(claims))
        atomic_write_text(out_dir / "claims.json", json_text(by_hook[hooks[0]]))
        return [f"claims.json (at {hooks[0]})"]
    every = []
    for name, baseline, ours in pairs:
        claims = C.pair_claims(table, baseline, ours)
        if not claims:
            continue
        print(f"The paper's claims for {name or 'baseline / ours'} ({ours} vs {baseline}), encoder read at "
              f"{claims[0]['hook']} ({C.hook_words(claims[0]['hook'])}):")
        print(C.describe_seed_claims(claims))
        every += [{"pair": name, **c} for c in claims]
    if not every:
        return []
    atomic_write_text(out_dir / "claims.json", json_text(every))
    pairs_checked = len(every) // len(C.CLAIMS)
    return [f"claims.json ({pairs_checked} pair{'s' if pairs_checked > 1 else ''})"]


def json_text(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def training_curves(runs: str | Path, models: list[str]) -> dict[str, list[dict]]:
    """The per-epoch records of each model's training log ``<runs>/<model>.log.jsonl`` (pretrain.py)."""
    curves = {}
    for model in models:
        path = Path(runs) / f"{model}.log.jsonl"
        if not path.is_file():
            raise UserError(f"{path} is missing: --runs must be the folder of the checkpoints' training logs, one "
                            f"<name>.log.jsonl per model named in the results ({', '.join(models)})")
        curves[model] = list(iter_jsonl(path))
    return curves


def collapse_panels() -> list[tuple]:
    """The panels of ``nc1_over_training.png``: NC1 at each hook point and projector layer, then top-1."""
    panels = [(f"NC1 at {layer} (train subset)", [(f"nc1/{layer}", "-")], True) for layer in TABLE_LAYERS]
    panels.append(("top-1: clean train subset (solid), validation (dashed)",
                   [("clean_train_acc1", "-"), ("val_acc1", "--")], False))
    return panels


def draw_collapse_over_training(series: dict[str, list[list[dict]]], path: Path, title: str) -> Path:
    return curves_over_training(series, collapse_panels(), path, title=title)


def summarize_seeds(result_dirs: list[str | Path], out_dir: str | Path) -> list[dict]:
    """The claims over several seeds' results folders (each already summarized): ``claims.{json,csv,md}``
    at every hook point all seeds evaluated, the 2 x 2 ``ablation.{json,csv,md}`` when every seed has
    the four arms, and ``nc1_over_training.png`` (mean +- std over seeds) when every seed has its curves."""
    out_dir = Path(out_dir)
    tables, curves = [], []
    for folder in result_dirs:
        path = Path(folder) / "summary.json"
        if not path.is_file():
            raise UserError(f"{path} is missing; run summarize.py --results {folder} first")
        tables.append(read_json(path))
        curve_file = Path(folder) / "curves.json"
        curves.append(read_json(curve_file)["models"] if curve_file.is_file() else None)
    hooks = C.hooks_in(tables)
    if not hooks:
        raise UserError(f"no hook point ({', '.join(C.HOOKS)}) was evaluated for both 'baseline' and 'ours' in every "
                        f"seed; evaluate one of them with --layers and name the checkpoints --names baseline ours")
    extra = {"results": [str(d) for d in result_dirs], "hooks": hooks, "confidence": C.CONFIDENCE}
    rows = C.claims_over_seeds(tables, hooks)
    write_results(rows, out_dir, "claims", extra=extra)
    print(f"The paper's claims over {len(tables)} seeds (mean +- std; paired difference ours - other with its "
          f"{C.CONFIDENCE:.0%} CI, Student t):")
    print(C.describe_claims_over_seeds(rows))
    written = ["claims.json, .csv, .md"]
    if all(C.has_arms(t, C.ARMS) for t in tables):
        effects = C.ablation(tables, hooks)
        write_results(effects, out_dir, "ablation", extra=extra)
        print(f"The 2 x 2 (main effects of the entropy term and of the projector, their interaction; "
              f"{C.CONFIDENCE:.0%} CI over seeds):")
        print(C.describe_ablation(effects))
        written.append("ablation.json, .csv, .md")
    if all((Path(folder) / "figure1.json").is_file() for folder in result_dirs):
        correlations = figure1_over_seeds(result_dirs, out_dir)
        write_results(correlations, out_dir, "figure1_seeds", columns=[k for k in correlations[0] if k != "r_per_seed"],
                      extra=extra)
        print(text_table(correlations, ["panel", "seeds", "r_mean", "r_std", "ci_low", "ci_high"]))
        written.append("figure1_seeds.json, .csv, .md, figure1_over_seeds.png")
    if all(c is not None for c in curves):
        models = list(dict.fromkeys(m for c in curves for m in c))
        series = {m: [c[m] for c in curves if m in c] for m in models}
        draw_collapse_over_training(series, out_dir / "nc1_over_training.png",
                                    title=f"collapse over training: mean +- std over {len(curves)} seeds")
        written.append("nc1_over_training.png")
    print(f"wrote in {out_dir}: {', '.join(written)}")
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
