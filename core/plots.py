"""Figures: metrics against layer depth, ID-vs-OOD score histograms, and scatter plots with a
Pearson R. Every function writes one PNG atomically and returns its path."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator  # noqa: E402
from scipy import stats  # noqa: E402

from core.io import atomic_savefig  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    out = atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return out


def _panel_grid(n: int, max_cols: int = 3, width: float = 4.6):
    """A figure with a grid of at least ``n`` panels, up to ``max_cols`` per row."""
    ncols = min(max_cols, n) or 1
    nrows = -(-n // ncols) or 1
    return plt.subplots(nrows, ncols, figsize=(width * ncols, 3.4 * nrows), squeeze=False)


def _finish_grid(fig, axes, used: int, path: str | Path, title: str = "", **suptitle) -> Path:
    """Hide the grid's panels after the first ``used``, add the title, save the figure."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, **suptitle)
    return _save(fig, path)


def metrics_vs_depth(series: Mapping[str, Sequence[dict]], metrics: Sequence[str], path: str | Path,
                     title: str = "", log_metrics: Sequence[str] = ()) -> Path:
    """One panel per metric; one line per model, x = layer depth (a row's ``depth``, else its
    position). ``series[model]`` is a list of rows with a ``layer`` key and the metric keys; all
    panels share the x axis, labelled with the layer names."""
    metrics = [m for m in metrics if any(m in r and r[m] is not None for rows in series.values() for r in rows)]
    fig, axes = _panel_grid(len(metrics))
    ticks: dict[int, str] = {}
    for rows in series.values():
        for i, r in enumerate(rows):
            ticks.setdefault(r.get("depth", i), r["layer"])
    for ax, metric in zip(axes.flat, metrics):
        for model, rows in series.items():
            pts = [(r.get("depth", i), r[metric]) for i, r in enumerate(rows) if r.get(metric) is not None]
            if pts:
                ax.plot([x for x, _ in pts], [v for _, v in pts], marker="o", label=model)
        ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)], rotation=45, ha="right", fontsize=8)
        ax.set_xlim(min(ticks) - 0.5, max(ticks) + 0.5)
        if metric in log_metrics:
            ax.set_yscale("log")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    return _finish_grid(fig, axes, len(metrics), path, title)


def score_histograms(panels: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]], path: str | Path,
                     xlabel: str = "score (higher = more in-distribution)") -> Path:
    """One panel per key: ``(id_scores, {ood_name: ood_scores})`` as overlaid density histograms."""
    fig, axes = _panel_grid(len(panels), max_cols=2, width=5.5)
    for ax, (title, (id_scores, ood)) in zip(axes.flat, panels.items()):
        everything = np.concatenate([np.asarray(id_scores)] + [np.asarray(v) for v in ood.values()])
        lo, hi = float(np.min(everything)), float(np.max(everything))
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 60)
        ax.hist(id_scores, bins=bins, density=True, alpha=0.55, label="ID", color="black")
        for name, scores in ood.items():
            ax.hist(scores, bins=bins, density=True, alpha=0.45, histtype="stepfilled", label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.legend(fontsize=7)
    return _finish_grid(fig, axes, len(panels), path)


def scatter_with_pearson(points: Mapping[str, Sequence[tuple[float, float, str]]], path: str | Path,
                         xlabel: str, ylabel: str, title: str = "", log_x: bool = False,
                         title_r: str | None = None) -> tuple[Path, float, float]:
    """Scatter ``(x, y, label)`` points grouped by series; the title carries Pearson's R (and its
    p-value) over all points, computed on log10(x) when ``log_x``, or ``title_r`` when given (e.g.
    R with its interval). Returns (path, r, p)."""
    xs = np.array([p[0] for pts in points.values() for p in pts], dtype=float)
    ys = np.array([p[1] for pts in points.values() for p in pts], dtype=float)
    fx = np.log10(xs) if log_x else xs
    ok = np.isfinite(fx) & np.isfinite(ys)
    r, p = (stats.pearsonr(fx[ok], ys[ok]) if ok.sum() >= 3 and np.ptp(fx[ok]) > 0 and np.ptp(ys[ok]) > 0
            else (float("nan"), float("nan")))
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for name, pts in points.items():
        ax.scatter([q[0] for q in pts], [q[1] for q in pts], label=name, s=30)
        for x, y, label in pts:
            ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 0.1, 0.2, 0.5, 1, ...: no overlapping labels
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    r_text = title_r or f"Pearson R = {r:.2f} (p = {p:.2g})"
    ax.set_title(textwrap.fill(f"{title + ': ' if title else ''}{r_text}", width=62), fontsize=9 if title_r else 10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path), float(r), float(p)


ARM_COLORS = {"baseline": "C0", "entropy": "C1", "projector": "C2", "ours": "C3"}


def _band(runs: Sequence[Sequence[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Epochs every run logged ``key`` at, and the mean and std (ddof 1; 0 for one run) over runs."""
    per_run = [{r["epoch"]: r[key] for r in records if r.get(key) is not None} for records in runs]
    if not per_run or not all(per_run):
        return None
    epochs = sorted(set.intersection(*(set(v) for v in per_run)))
    if not epochs:
        return None
    values = np.array([[v[e] for e in epochs] for v in per_run], dtype=float)
    std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(epochs))
    return np.array(epochs), values.mean(axis=0), std


def curves_over_training(series: Mapping[str, Sequence[Sequence[dict]]], panels: Sequence[tuple], path: str | Path,
                         title: str = "") -> Path:
    """Per-epoch curves, one panel per ``(title, [(key, style), ...], log_y)`` in ``panels``; one
    colour per model. ``series[model]`` holds one list of per-epoch records (``epoch`` and the keys)
    per run (seed): the line is the mean over runs and the band +- one standard deviation. Panels
    no model logged are left out."""
    drawn = [(t, keys, log) for t, keys, log in panels
             if any(_band(runs, key) is not None for runs in series.values() for key, _ in keys)]
    fig, axes = _panel_grid(len(drawn))
    for ax, (panel_title, keys, log_y) in zip(axes.flat, drawn):
        for i, (model, runs) in enumerate(series.items()):
            color = ARM_COLORS.get(model, f"C{4 + i}")
            for key, style in keys:
                band = _band(runs, key)
                if band is None:
                    continue
                epochs, mean, std = band
                ax.plot(epochs, mean, style, color=color, label=model if style == "-" else None)
                if len(runs) > 1:
                    ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.18, linewidth=0)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _finish_grid(fig, axes, len(drawn), path, title, fontsize=10)


def _interval_bars(ax, intervals, color, linewidth: float) -> None:
    """A vertical bar from ``low`` to ``high`` at ``x`` for each ``(x, low, high)`` with both ends given.
    Drawn from its ends, not as an error around a point: an interval (e.g. a percentile bootstrap)
    need not contain its point."""
    bars = [(x, low, high) for x, low, high in intervals if low is not None and high is not None]
    if bars:
        xs, lows, highs = zip(*bars)
        ax.vlines(xs, lows, highs, color=color, linewidth=linewidth)


def errorbar_panels(panels: Sequence[dict], path: str | Path, title: str = "", xlabel: str = "") -> Path:
    """One panel per dict ``{"title", "series": [(label, xs, ys, lows, highs), ...]}``: lines with a bar
    from ``lows`` to ``highs`` at each point (None = no bar there; a bar need not contain its point).
    Optional keys: ``log_y``, ``zero_line``, ``xscale`` (``("symlog", linthresh)`` or ``"log"``),
    ``xticks`` (the x values labelled), ``vline`` (``(x, label)``: a dashed vertical marker)."""
    fig, axes = _panel_grid(len(panels))
    for ax, panel in zip(axes.flat, panels):
        for label, xs, ys, lows, highs in panel["series"]:
            (line,) = ax.plot(xs, ys, marker="o", label=label)
            _interval_bars(ax, zip(xs, lows, highs), line.get_color(), linewidth=1.5)
        if panel.get("zero_line"):
            ax.axhline(0.0, color="black", linewidth=0.8)
        if panel.get("vline"):
            ax.axvline(panel["vline"][0], color="grey", linestyle="--", linewidth=1, label=panel["vline"][1])
        if panel.get("log_y"):
            ax.set_yscale("log")
        scale = panel.get("xscale")
        if isinstance(scale, tuple):
            ax.set_xscale(scale[0], linthresh=scale[1])
        elif scale:
            ax.set_xscale(scale)
        if panel.get("xticks") is not None:
            ticks = list(panel["xticks"])
            ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
            span = max(ticks) - min(ticks) or 1.0
            ax.set_xlim(min(ticks) - 0.02 * span, max(ticks) + (0.25 if isinstance(scale, tuple) else 0.05) * span)
        ax.set_title(textwrap.fill(panel["title"], width=58), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _finish_grid(fig, axes, len(panels), path, title, fontsize=10)


def category_panels(panels: Sequence[dict], categories: Sequence[str], path: str | Path, title: str = "") -> Path:
    """One panel per dict ``{"title", "series": [(label, values, lows, highs), ...]}`` over the
    categorical x axis ``categories``: each series a row of markers (no lines), side by side within a
    category, with a bar from ``lows`` to ``highs`` where both are given (the bar need not contain its
    marker; None: no bar, or no point at all when the value is None). One panel per row of the figure, wide enough for the category names."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8.0, 0.55 * len(categories) + 2), 3.6 * len(panels)),
                             squeeze=False)
    x = np.arange(len(categories), dtype=float)
    for ax, panel in zip(axes.flat, panels):
        n = len(panel["series"])
        for i, (label, values, lows, highs) in enumerate(panel["series"]):
            shift = (i - (n - 1) / 2) * 0.7 / max(n, 1)
            pts = [(xi + shift, v, (lows or [None] * len(values))[j], (highs or [None] * len(values))[j])
                   for j, (xi, v) in enumerate(zip(x, values)) if v is not None]
            if not pts:
                continue
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", markersize=4, label=label)
            _interval_bars(ax, ((xp, lo, hi) for xp, _, lo, hi in pts), line.get_color(), linewidth=1)
        ax.set_xticks(x, list(categories), rotation=45, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(categories) - 0.4)
        ax.set_title(textwrap.fill(panel["title"], width=int(fig.get_figwidth() * 14)), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, ncol=min(n, 5))
    return _finish_grid(fig, axes, len(panels), path, title, fontsize=10)

