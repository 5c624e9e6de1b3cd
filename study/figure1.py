"""The paper's Figure 1: NC1 against OOD detection and against transfer across layers, with Pearson's
R and its uncertainty.

R is computed over every (model, layer) point of a summary between log10(NC1) of the layer's ID
training features and its average FPR95 (energy) or average linear-probe top-1. A handful of points
gives a noisy R, so it comes with an interval:

- over samples, in one run: the evaluators write each point's figures on B bootstrap resamples of
  their samples (``nc1_boot``, ``fpr95_boot``, ``best_acc_boot``; :mod:`evaluate.bootstrap`),
  resample b of a dataset being the same at every layer and for every model, so R of resample b is
  computed from paired points. The interval is the 2.5th and 97.5th percentiles of the B values of
  R (the percentile bootstrap; the layers and models, i.e. the points themselves, are held fixed);
- over seeds, in the study: R of each seed's run, and their mean with its 95% Student t interval
  (:func:`study.claims.mean_ci`).

``figure1.json`` holds, per panel, R, its p-value, the interval, the number of points and of
replicates; the figures ``nc1_vs_fpr95.png`` and ``nc1_vs_transfer.png`` state R with its interval.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

from core.errors import UserError
from core.io import atomic_write_text, read_json
from core.plots import category_panels, scatter_with_pearson
from study.claims import mean_ci

PANELS = {"nc1_vs_fpr95": ("fpr95_avg", "fpr95"), "nc1_vs_transfer": ("lp_acc_avg", "lp")}
LABELS = {"nc1_vs_fpr95": "OOD detection", "nc1_vs_transfer": "transfer"}


def pearson(x, y) -> float:
    """Pearson's r of log10(x) and y over the finite pairs (NaN with fewer than 3 or a constant side)."""
    fx, y = np.log10(np.asarray(x, dtype=float)), np.asarray(y, dtype=float)
    ok = np.isfinite(fx) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(fx[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(fx[ok], y[ok])[0, 1])


def bootstrap_interval(points: Sequence[dict], key: str, boot: str, level: float = 0.95) -> tuple | None:
    """(low, high, B) of the percentile bootstrap of R over the points' replicates, or None when a point lacks them."""
    nc1 = [p["boot"].get("nc1") for p in points]
    other = [p["boot"].get(boot) for p in points]
    if any(v is None for v in nc1 + other) or len({len(v) for v in nc1 + other}) != 1:
        return None
    nc1, other = np.asarray(nc1, dtype=float), np.asarray(other, dtype=float)   # points x B
    replicates = np.array([pearson(nc1[:, b], other[:, b]) for b in range(nc1.shape[1])])
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return None
    tail = 100 * (1 - level) / 2
    return float(np.percentile(replicates, tail)), float(np.percentile(replicates, 100 - tail)), int(nc1.shape[1])


def correlations(points: Sequence[dict]) -> dict:
    """Per panel: R and its p-value over the points (each ``{model, layer, nc1, fpr95_avg, lp_acc_avg,
    boot: {nc1, fpr95, lp}}``), the bootstrap interval when every point has replicates."""
    out = {}
    for panel, (key, boot) in PANELS.items():
        x, y = [p["nc1"] for p in points], [p[key] for p in points]
        r = pearson(x, y)
        fx = np.log10(np.asarray(x, dtype=float))
        p_value = float(stats.pearsonr(fx, y).pvalue) if np.isfinite(r) else float("nan")
        interval = bootstrap_interval(points, key, boot)
        out[panel] = {"r": r, "p": p_value, "n_points": len(points),
                      "ci_low": interval[0] if interval else None, "ci_high": interval[1] if interval else None,
                      "replicates": interval[2] if interval else 0}
    return out


def _interval_text(c: dict) -> str:
    if c["ci_low"] is None:
        return f"R = {c['r']:+.2f} (p = {c['p']:.2g}; no bootstrap replicates)"
    return f"R = {c['r']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}] (95% bootstrap over samples, B = {c['replicates']})"


def write_figure1(points: Sequence[dict], out_dir: Path, scorer: str) -> dict:
    """The two scatter figures, titled with R and its interval, and ``figure1.json``; returns the correlations."""
    result = correlations(points)
    series: dict[str, list] = {}
    for p in points:
        series.setdefault(p["model"], []).append(p)
    axes = {"nc1_vs_fpr95": f"FPR95 ({scorer}, average over OOD sets)",
            "nc1_vs_transfer": "linear-probe top-1 (average over transfer sets)"}
    for panel, (key, _) in PANELS.items():
        scatter_with_pearson({m: [(p["nc1"], p[key], p["layer"]) for p in pts] for m, pts in series.items()},
                             out_dir / f"{panel}.png", "NC1 (log scale)", axes[panel], LABELS[panel], log_x=True,
                             title_r=_interval_text(result[panel]))
    atomic_write_text(out_dir / "figure1.json", json.dumps({"scorer": scorer, **result}, indent=2) + "\n")
    print("Pearson R across all layers, log10(NC1) against: FPR95 " + _interval_text(result["nc1_vs_fpr95"]) +
          "; transfer top-1 " + _interval_text(result["nc1_vs_transfer"]))
    return result


def figure1_over_seeds(result_dirs: Sequence[str | Path], out_dir: Path) -> list[dict]:
    """R of every seed's ``figure1.json``, their mean with its 95% t interval over seeds, written as
    ``figure1_seeds.{json,...}`` by the caller and drawn as ``figure1_over_seeds.png`` (each seed's R
    with its bootstrap interval, and the mean over seeds with its interval)."""
    per_seed = []
    for folder in result_dirs:
        path = Path(folder) / "figure1.json"
        if not path.is_file():
            raise UserError(f"{path} is missing; run summarize.py --results {folder} first")
        per_seed.append(read_json(path))
    rows = []
    for panel in PANELS:
        rs = [s[panel]["r"] for s in per_seed]
        mean, low, high = mean_ci(rs)
        rows.append({"panel": panel, "seeds": len(rs), "r_mean": mean, "r_std": statistics.stdev(rs) if len(rs) > 1
                     else None, "ci_low": low, "ci_high": high, "r_per_seed": rs})
    labels = [f"seed {i}" for i in range(len(per_seed))] + ["mean over seeds"]
    series = []
    for panel in PANELS:
        row = next(r for r in rows if r["panel"] == panel)
        values = [s[panel]["r"] for s in per_seed] + [row["r_mean"]]
        lows = [s[panel]["ci_low"] for s in per_seed] + [row["ci_low"]]
        highs = [s[panel]["ci_high"] for s in per_seed] + [row["ci_high"]]
        series.append((f"log10(NC1) vs {LABELS[panel]}", values, lows, highs))
    category_panels([{"title": "Pearson R across layers (bars: a seed's 95% bootstrap interval over samples; the "
                               "mean's 95% t interval over seeds)", "series": series}],
                    labels, out_dir / "figure1_over_seeds.png", title="Figure 1's correlations over seeds")
    return rows
