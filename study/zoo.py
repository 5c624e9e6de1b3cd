"""Which post-hoc OOD detectors gain from collapse control: the detector zoo over seeds.

Input: one ``ood.json`` of eval_ood.py per seed, each scoring the ``baseline`` and ``ours`` of the
embedded study with every detector at the layers ``last_conv``, ``encoder`` and (ours only)
``projector`` (``scripts/ood_zoo.sh``). For every detector and layer, FPR95 and AUROC of the
``average`` row (the mean over the OOD sets) are compared between the two models, paired by seed:
the difference ours - baseline per seed, its mean and 95% interval (Student t, df = n - 1,
:func:`study.claims.mean_ci`) and the seeds where ours is better. The projector exists in ours
only; its rows compare it with the baseline's ``last_conv``, the comparison of the paper's claim (3)
(``baseline_layer`` says which layer the baseline was read at).

:func:`ranking` orders every (detector, layer) of each model by its mean FPR95 over seeds, so the
tables say where the paper's choice, energy at the projector, stands among all of them.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

from core.errors import UserError
from core.io import read_json
from core.plots import category_panels
from core.tables import AVERAGE, text_table, write_results
from study.claims import mean_ci

MODELS = ("baseline", "ours")
LAYERS = ("last_conv", "encoder", "projector")
BASELINE_LAYER = {"last_conv": "last_conv", "encoder": "encoder", "projector": "last_conv"}
METRICS = (("fpr95", "lower"), ("auroc", "higher"))


def load_seeds(files: Sequence[str | Path]) -> list[dict]:
    """Per seed file: ``{(model, layer, scorer): average row}`` (rows with no figures are left out)."""
    seeds = []
    for path in files:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path} is missing; run scripts/ood_zoo.sh (eval_ood.py) for that seed first")
        rows = read_json(path)["rows"]
        seeds.append({(r["model"], r["layer"], r["scorer"]): r for r in rows
                      if r["ood"] == AVERAGE and r.get("auroc") is not None})
    return seeds


def _values(seeds: list[dict], key: tuple, metric: str) -> list[float] | None:
    values = [s[key][metric] for s in seeds if key in s]
    return values if len(values) == len(seeds) else None


def zoo_table(seeds: list[dict]) -> list[dict]:
    """One row per (detector, layer) that both models have in every seed (the projector: ours only)."""
    scorers = list(dict.fromkeys(k[2] for s in seeds for k in s))
    rows = []
    for scorer in scorers:
        for layer in LAYERS:
            ours_key, base_key = ("ours", layer, scorer), ("baseline", BASELINE_LAYER[layer], scorer)
            row = {"scorer": scorer, "layer": layer, "baseline_layer": BASELINE_LAYER[layer], "seeds": len(seeds)}
            for metric, better in METRICS:
                ours, base = _values(seeds, ours_key, metric), _values(seeds, base_key, metric)
                if ours is None or base is None:
                    break
                diff, low, high = mean_ci([a - b for a, b in zip(ours, base)])
                wins = sum((a < b) if better == "lower" else (a > b) for a, b in zip(ours, base))
                row.update({f"baseline_{metric}": statistics.fmean(base), f"ours_{metric}": statistics.fmean(ours),
                            f"diff_{metric}": diff, f"diff_{metric}_low": low, f"diff_{metric}_high": high,
                            f"ours_better_{metric}": f"{wins}/{len(seeds)}"})
            else:
                rows.append(row)
    if not rows:
        raise UserError("the ood.json files hold no detector scored for both 'baseline' and 'ours' in every seed; "
                        "run scripts/ood_zoo.sh")
    return rows


def verdict(row: dict, metric: str) -> str:
    """``helps`` / ``hurts`` when the 95% interval of ours - baseline excludes 0 in the better / worse
    direction, else ``no clear effect``."""
    low, high = row[f"diff_{metric}_low"], row[f"diff_{metric}_high"]
    if low is None:
        return "one seed"
    better = dict(METRICS)[metric]
    if (high < 0 and better == "lower") or (low > 0 and better == "higher"):
        return "helps"
    if (low > 0 and better == "lower") or (high < 0 and better == "higher"):
        return "hurts"
    return "no clear effect"


def ranking(seeds: list[dict]) -> list[dict]:
    """Every (model, detector, layer) in every seed, ranked within its model by mean FPR95 (then AUROC)."""
    keys = [k for k in dict.fromkeys(k for s in seeds for k in s) if all(k in s for s in seeds)]
    rows = [{"model": m, "scorer": sc, "layer": layer,
             "fpr95": statistics.fmean(_values(seeds, (m, layer, sc), "fpr95")),
             "auroc": statistics.fmean(_values(seeds, (m, layer, sc), "auroc"))} for m, layer, sc in keys]
    ranked = []
    for model in MODELS:
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: (r["fpr95"], -r["auroc"]))
        ranked += [{**r, "rank": i + 1} for i, r in enumerate(mine)]
    return ranked


def zoo_figure(table: list[dict], path: Path) -> Path:
    """Per metric a panel: every detector, the baseline and ours at each layer, mean and paired 95% CI of
    the difference drawn around ours."""
    scorers = list(dict.fromkeys(r["scorer"] for r in table))
    panels = []
    for metric, better in METRICS:
        series = []
        for model, layer in (("baseline", "last_conv"), ("baseline", "encoder"), ("ours", "last_conv"),
                             ("ours", "encoder"), ("ours", "projector")):
            by = {r["scorer"]: r for r in table if r["layer"] == layer}
            means = [by[s][f"{model}_{metric}"] if s in by else None for s in scorers]
            lows = highs = None
            if model == "ours":
                lows = [by[s][f"{model}_{metric}"] + by[s][f"diff_{metric}_low"] - by[s][f"diff_{metric}"]
                        if s in by and by[s][f"diff_{metric}_low"] is not None else None for s in scorers]
                highs = [by[s][f"{model}_{metric}"] + by[s][f"diff_{metric}_high"] - by[s][f"diff_{metric}"]
                         if s in by and by[s][f"diff_{metric}_high"] is not None else None for s in scorers]
            series.append((f"{model} {layer}", means, lows, highs))
        panels.append({"title": f"{metric.upper()} averaged over the OOD sets ({better} is better); bars: the paired "
                                f"95% CI of ours - baseline, around ours", "series": series})
    return category_panels(panels, scorers, path, title="detector zoo: baseline vs ours (mean over seeds)")


def summarize_zoo(files: Sequence[str | Path], out_dir: str | Path) -> list[dict]:
    """:func:`zoo_table`, :func:`ranking` and the figure, written as ``zoo.{json,csv,md}``,
    ``zoo_ranking.{json,csv,md}`` and ``zoo.png``; both printed, with each detector's verdict."""
    seeds = load_seeds(files)
    table = zoo_table(seeds)
    for row in table:
        row["verdict_fpr95"], row["verdict_auroc"] = verdict(row, "fpr95"), verdict(row, "auroc")
    ranked = ranking(seeds)
    out_dir = Path(out_dir)
    extra = {"files": [str(f) for f in files], "confidence": 0.95}
    write_results(table, out_dir, "zoo", extra=extra)
    write_results(ranked, out_dir, "zoo_ranking", extra=extra)
    zoo_figure(table, out_dir / "zoo.png")
    print(text_table(table, ["scorer", "layer", "baseline_layer", "baseline_fpr95", "ours_fpr95", "diff_fpr95",
                             "diff_fpr95_low", "diff_fpr95_high", "verdict_fpr95", "baseline_auroc", "ours_auroc",
                             "diff_auroc", "verdict_auroc"]))
    print(text_table([r for r in ranked if r["rank"] <= 5], ["model", "rank", "scorer", "layer", "fpr95", "auroc"]))
    print(f"wrote in {out_dir}: zoo.json, .csv, .md, zoo_ranking.json, .csv, .md, zoo.png")
    return table
