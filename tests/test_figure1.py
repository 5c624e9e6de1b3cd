"""Figure 1's Pearson R with its bootstrap interval over samples and its interval over seeds (study/figure1.py)."""
import json

import numpy as np
import pytest
from scipy import stats

from study.figure1 import correlations, figure1_over_seeds, write_figure1


def make_points(seed=0, replicates=40):
    rng = np.random.default_rng(seed)
    points = []
    for i, (model, layer) in enumerate([(m, layer) for m in ("baseline", "ours") for layer in ("a", "b", "c")]):
        nc1 = 10 ** (-i / 3)
        fpr, lp = 0.3 + 0.1 * i + rng.normal(0, 0.02), 0.8 - 0.05 * i + rng.normal(0, 0.02)
        boot = {"nc1": (nc1 * np.exp(rng.normal(0, 0.1, replicates))).tolist(),
                "fpr95": (fpr + rng.normal(0, 0.03, replicates)).tolist(),
                "lp": (lp + rng.normal(0, 0.03, replicates)).tolist()}
        points.append({"model": model, "layer": layer, "nc1": nc1, "fpr95_avg": fpr, "lp_acc_avg": lp, "boot": boot})
    return points


def test_r_and_its_percentile_interval_by_an_independent_computation():
    points = make_points()
    got = correlations(points)
    x = np.log10([p["nc1"] for p in points])
    r, pvalue = stats.pearsonr(x, [p["fpr95_avg"] for p in points])
    assert got["nc1_vs_fpr95"]["r"] == pytest.approx(r, rel=1e-12)
    assert got["nc1_vs_fpr95"]["p"] == pytest.approx(pvalue, rel=1e-9)
    reps = [np.corrcoef(np.log10([p["boot"]["nc1"][b] for p in points]), [p["boot"]["fpr95"][b] for p in points])[0, 1]
            for b in range(40)]
    assert (got["nc1_vs_fpr95"]["ci_low"], got["nc1_vs_fpr95"]["ci_high"]) == pytest.approx(
        (np.percentile(reps, 2.5), np.percentile(reps, 97.5)), rel=1e-12)
    assert got["nc1_vs_fpr95"]["ci_low"] < got["nc1_vs_fpr95"]["r"] < got["nc1_vs_fpr95"]["ci_high"]
    assert got["nc1_vs_transfer"]["r"] > 0.9 and got["nc1_vs_transfer"]["replicates"] == 40
    points[0]["boot"]["lp"] = None  # a point without replicates: R without an interval
    assert correlations(points)["nc1_vs_transfer"]["ci_low"] is None


def test_the_figures_state_the_interval_and_the_seeds_get_a_t_interval(tmp_path):
    folders = []
    for seed in range(3):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        write_figure1(make_points(seed), folder, "energy")
        folders.append(folder)
        assert (folder / "nc1_vs_fpr95.png").is_file()
    rows = figure1_over_seeds(folders, tmp_path)
    rs = [json.loads((f / "figure1.json").read_text())["nc1_vs_fpr95"]["r"] for f in folders]
    row = next(r for r in rows if r["panel"] == "nc1_vs_fpr95")
    low, high = stats.t.interval(0.95, 2, loc=np.mean(rs), scale=stats.sem(rs))
    assert row["r_mean"] == pytest.approx(np.mean(rs)) and (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    assert (tmp_path / "figure1_over_seeds.png").is_file()
