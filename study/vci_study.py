"""Does variability collapse on the ID data predict transfer? Xu & Liu's claim on our checkpoints.

Xu & Liu, "Quantifying the Variability Collapse of Neural Networks" (ICML 2023), propose the
variability collapse index VCI = 1 - Tr(Sigma_T^+ Sigma_B) / rank(Sigma_B) of the last-layer
features (0 = complete collapse, formulas in :mod:`metrics.nc`) and report that it indicates
transferability: in line with the earlier observation they build on, transfer improves with the
within-class variability the features keep, so *less* collapse (a *higher* VCI) goes with
*better* transfer. NC1 and CDNV also grow as collapse weakens, so for all three metrics a
**positive** correlation with transfer supports the claim and a negative one contradicts it.

Transfer is measured as train_lp.py's ``log_odds_gain`` of a layer: the mean over the downstream
sets of logit(probe top-1) - logit(the checkpoint's ID test top-1) (see :mod:`evaluate.transfer`),
so a checkpoint is not credited for transferring well merely because it is a better classifier.

:func:`run_study` reads the ``average`` rows of one layer (one point per checkpoint) from
train_lp.py's JSON and, per metric, computes Pearson's r (on log10 of NC1 and CDNV, which span
decades, and on VCI itself) and Spearman's rho (Pearson's r of the ranks, the same on either
scale) with their two-sided p-values (scipy.stats); it writes ``vci_study.{json,csv,md}`` and
``vci_study.png``, one scatter panel per metric against the gain, titled with r, rho and their p-values.

A sweep yields few checkpoints, and there the usual p-values (Student's t approximation) are
wrong - a perfectly monotone set of 4 points gets p = 0 from ``spearmanr``. Up to
:data:`EXACT_MAX_N` points the p-values are therefore exact permutation tests over all n!
pairings (``scipy.stats.PermutationMethod``): p = the fraction of pairings whose |r| is at least
the observed one, e.g. 2/24 for 4 perfectly monotone points.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter  # noqa: E402
from scipy import stats  # noqa: E402

from core.errors import UserError  # noqa: E402
from core.io import atomic_savefig, read_json
from core.tables import AVERAGE, text_table, write_results  # noqa: E402
from metrics.nc import metric_keys  # noqa: E402

GAIN = "log_odds_gain"
METRICS = tuple(metric_keys(collapse=True))
LOG_METRICS = tuple(metric_keys(collapse=True, log_scale=True))  # Pearson's r on log10 of these
MIN_POINTS = 3
EXACT_MAX_N = 8  # up to this many points the p-values enumerate all n! pairings (8! = 40320)
CLAIM = ("Xu & Liu (ICML 2023): less variability collapse (higher VCI; likewise higher NC1 and CDNV) goes with "
         "better transfer, so a positive correlation with the log-odds gain supports the claim and a negative "
         "one contradicts it.")
TABLE_COLUMNS = ["metric", "x", "n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p", "p_value",
                 "agrees_with_claim"]
POINT_COLUMNS = ["model", "layer", "id_acc", "best_acc", GAIN, *METRICS]

STUDY_DEFAULTS = {"results": None, "out_dir": None, "layer": "encoder", "lp_name": "linear_probe"}
STUDY_TYPES = {"results": str, "out_dir": str}
STUDY_HELP = {
    "results": "folder holding train_lp.py's <lp_name>.json (run with the default --id_metrics)",
    "out_dir": "where vci_study.{json,csv,md} and vci_study.png are written (None: the --results folder)",
    "layer": "the layer whose average rows are compared across checkpoints",
    "lp_name": "file name stem of train_lp.py's results (its --out_name)",
}


def study_points(rows: list[dict], layer: str = "encoder") -> list[dict]:
    """One point per model: the ``average`` row of ``layer`` reduced to :data:`POINT_COLUMNS`."""
    averages = [r for r in rows if r["dataset"] == AVERAGE and r["layer"] == layer]
    if not averages:
        layers = sorted({r["layer"] for r in rows})
        raise UserError(f"the probe results have no '{layer}' layer; pass --layer with one of: {', '.join(layers)}")
    missing = [r["model"] for r in averages if any(r.get(key) is None for key in (GAIN, *METRICS))]
    if missing:
        raise UserError(f"the probe results of {', '.join(missing)} lack the ID columns "
                        f"({GAIN}, {', '.join(METRICS)}); "
                        f"rerun train_lp.py with --id_metrics and the checkpoints' --dataset")
    if len(averages) < MIN_POINTS:
        raise UserError(f"a correlation across checkpoints needs at least {MIN_POINTS} of them, the results hold "
                        f"{len(averages)}; probe more checkpoints (e.g. one per swept value in scripts/vci_study.sh)")
    return [{key: r.get(key) for key in POINT_COLUMNS} for r in averages]


def correlation(x, y) -> dict:
    """Pearson's r and Spearman's rho of ``x`` and ``y`` with their two-sided p-values, over the
    pairs where both are finite: exact permutation p-values up to :data:`EXACT_MAX_N` pairs
    (``p_value`` = 'exact permutation'), else scipy's ``pearsonr``/``spearmanr`` ('t approximation');
    NaN when fewer than 3 pairs remain or either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    out = {"n": n, "pearson_r": math.nan, "pearson_p": math.nan, "spearman_rho": math.nan, "spearman_p": math.nan,
           "p_value": None}
    if n < MIN_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    if n <= EXACT_MAX_N:
        exact = stats.PermutationMethod(n_resamples=math.factorial(n))  # >= n! resamples: every pairing once
        pearson = stats.pearsonr(x, y, method=exact)
        spearman = stats.pearsonr(stats.rankdata(x), stats.rankdata(y), method=exact)
        out["p_value"] = "exact permutation"
    else:
        pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
        out["p_value"] = "t approximation"
    out.update(pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
               spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue))
    return out


def agreement(r: float, rho: float) -> str:
    """'yes' when Pearson and Spearman are both positive (the claim's sign), 'no' when both are
    negative, 'mixed' when they differ, 'n/a' when either is undefined."""
    if math.isnan(r) or math.isnan(rho):
        return "n/a"
    if r > 0 and rho > 0:
        return "yes"
    return "no" if r < 0 and rho < 0 else "mixed"


def correlation_table(points: list[dict], metrics=METRICS, target: str = GAIN) -> list[dict]:
    """One row per metric: its correlation with ``target`` across the points (Pearson on log10 for
    :data:`LOG_METRICS`) and whether its sign agrees with the claim."""
    y = [p[target] for p in points]
    table = []
    for metric in metrics:
        values = np.asarray([p[metric] for p in points], dtype=np.float64)
        is_log = metric in LOG_METRICS
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log10(values) if is_log else values
        row = {"metric": metric, "x": f"log10({metric})" if is_log else metric, **correlation(x, y)}
        row["agrees_with_claim"] = agreement(row["pearson_r"], row["spearman_rho"])
        table.append(row)
    return table


def plot_study(points: list[dict], table: list[dict], path: str | Path, layer: str) -> Path:
    """One panel per metric of ``table``: the metric of each checkpoint (log x axis for
    :data:`LOG_METRICS`) against its log-odds gain, titled with the table's r, rho and p-values."""
    fig, axes = plt.subplots(1, len(table), figsize=(4.8 * len(table), 4.0), squeeze=False)
    for ax, row in zip(axes.flat, table):
        metric = row["metric"]
        xs, ys = [p[metric] for p in points], [p[GAIN] for p in points]
        ax.scatter(xs, ys, s=30)
        for x, y, p in zip(xs, ys, points):
            ax.annotate(p["model"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if metric in LOG_METRICS:
            ax.set_xscale("log")
            for axis_formatter in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
                axis_formatter(FormatStrFormatter("%.3g"))  # narrow ranges: plain numbers, not 7.6 x 10^-1
        ax.set_xlabel(f"{metric} of the ID train features ({layer})")
        ax.set_ylabel("log-odds gain (mean over downstream sets)")
        ax.set_title(f"{metric}: Pearson R = {row['pearson_r']:.2f} (p = {row['pearson_p']:.2g})\n"
                     f"Spearman rho = {row['spearman_rho']:.2f} (p = {row['spearman_p']:.2g}), n = {row['n']}",
                     fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("ID variability collapse vs transfer (a positive R supports Xu & Liu, ICML 2023)", fontsize=10)
    fig.tight_layout()
    out = atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return out


def run_study(results: str | Path | None, out_dir: str | Path | None = None, layer: str = "encoder",
              lp_name: str = "linear_probe") -> list[dict]:
    """Read ``<results>/<lp_name>.json``, print and write the correlation table and its figure."""
    if not results:
        raise UserError("no results folder; pass --results DIR (the --out_dir of train_lp.py)")
    path = Path(results) / f"{lp_name}.json"
    if not path.is_file():
        raise UserError(f"{path} is missing; run train_lp.py --out_dir {results} on the checkpoints first")
    points = study_points(read_json(path)["rows"], layer)
    table = correlation_table(points)
    out_dir = Path(out_dir or results)
    paths = write_results(table, out_dir, "vci_study", columns=TABLE_COLUMNS,
                          extra={"claim": CLAIM, "layer": layer, "target": GAIN, "source": str(path), "points": points})
    paths["png"] = plot_study(points, table, out_dir / "vci_study.png", layer)
    print(text_table(points, POINT_COLUMNS))
    print(text_table(table, TABLE_COLUMNS))
    print(CLAIM)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return table


STUDY_OPTIONS = dict(defaults=STUDY_DEFAULTS, types=STUDY_TYPES, helps=STUDY_HELP)


def run_vci_study(cfg) -> list[dict]:
    """vci_study.py: :func:`run_study` with the flags."""
    return run_study(cfg.results, cfg.out_dir, layer=cfg.layer, lp_name=cfg.lp_name)
