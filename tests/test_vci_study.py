"""vci_study.py: correlations equal scipy's, the claim's sign is read correctly, the analysis of a
hand-made train_lp.py table writes its files, user errors are one line, and scripts/vci_study.sh
(dry run) issues commands every entry point parses."""
import json
import math
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import vci_study
from core.config import parse_config
from core.errors import UserError
from evaluate.transfer import AVERAGE, TRANSFER_DEFAULTS, TRANSFER_TYPES
from train.options import PRETRAIN_ALIASES, PRETRAIN_DEFAULTS, PRETRAIN_TYPES
from study.vci_study import (STUDY_DEFAULTS, STUDY_TYPES, agreement, correlation, correlation_table,
                              study_points)

ROOT = Path(__file__).resolve().parents[1]


def test_correlation_equals_scipy_beyond_the_exact_range():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = 0.5 * x + rng.normal(size=12)
    got = correlation(x, y)
    pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    assert got["n"] == 12 and got["p_value"] == "t approximation"
    assert got["pearson_r"] == pytest.approx(pearson.statistic, abs=1e-12)
    assert got["pearson_p"] == pytest.approx(pearson.pvalue, rel=1e-9)
    assert got["spearman_rho"] == pytest.approx(spearman.statistic, abs=1e-12)
    assert got["spearman_p"] == pytest.approx(spearman.pvalue, rel=1e-9)


def test_few_points_get_exact_permutation_p_values():
    x, y = [0.24, 0.25, 0.26, 0.27], [-0.7, -0.6, -0.5, -0.3]  # perfectly monotone, not linear
    got = correlation(x, y)
    assert got["p_value"] == "exact permutation"
    assert got["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert got["spearman_rho"] == pytest.approx(1.0) and stats.spearmanr(x, y).pvalue == 0.0  # the t approximation
    assert got["spearman_p"] == pytest.approx(2 / 24)  # of the 4! pairings only this one and its reverse have |rho| = 1
    assert got["pearson_p"] == pytest.approx(2 / 24)  # no other pairing gets |r| this high either
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=7), rng.normal(size=7)
    want = stats.pearsonr(a, b, method=stats.PermutationMethod(n_resamples=5040))
    assert correlation(a, b)["pearson_p"] == pytest.approx(want.pvalue, abs=1e-12)
    ranks = stats.pearsonr(stats.rankdata(a), stats.rankdata(b), method=stats.PermutationMethod(n_resamples=5040))
    assert correlation(a, b)["spearman_rho"] == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert correlation(a, b)["spearman_p"] == pytest.approx(ranks.pvalue, abs=1e-12)


def test_agreement_reads_the_claims_sign():
    assert agreement(0.4, 0.2) == "yes" and agreement(-0.4, -0.1) == "no"
    assert agreement(0.4, -0.1) == "mixed" and agreement(math.nan, 0.3) == "n/a"


def _points():
    """Five checkpoints: VCI rises with the gain, NC1 falls with it, CDNV is not monotone in it."""
    gain = [-0.9, -0.4, 0.1, 0.3, 0.8]
    vci = [0.10, 0.20, 0.22, 0.40, 0.45]
    nc1 = [5.0, 2.0, 1.5, 0.4, 0.2]
    cdnv = [0.5, 0.1, 0.9, 0.2, 0.3]
    return [{"model": f"m{i}", "layer": "encoder", "id_acc": 0.9, "best_acc": 0.6, "log_odds_gain": g,
             "vci": v, "nc1": n, "nc1_cdnv": c} for i, (g, v, n, c) in enumerate(zip(gain, vci, nc1, cdnv))]


def test_correlation_table_uses_log10_for_nc1_and_cdnv_and_states_agreement():
    points = _points()
    table = {row["metric"]: row for row in correlation_table(points)}
    gain = [p["log_odds_gain"] for p in points]
    assert table["vci"]["x"] == "vci" and table["nc1"]["x"] == "log10(nc1)"
    assert table["vci"]["pearson_r"] == pytest.approx(stats.pearsonr([p["vci"] for p in points], gain).statistic)
    for metric in ("nc1", "nc1_cdnv"):
        values = [p[metric] for p in points]
        assert table[metric]["pearson_r"] == pytest.approx(stats.pearsonr(np.log10(values), gain).statistic)
        assert table[metric]["spearman_rho"] == pytest.approx(stats.spearmanr(values, gain).statistic)
    assert table["vci"]["spearman_rho"] == pytest.approx(1.0) and table["vci"]["agrees_with_claim"] == "yes"
    assert table["nc1"]["spearman_rho"] == pytest.approx(-1.0) and table["nc1"]["agrees_with_claim"] == "no"


def _lp_rows(points, extra_layer="layer1"):
    """A train_lp.py table holding ``points`` as the encoder's average rows, plus per-dataset rows
    and another layer that the study must ignore."""
    rows = []
    for p in points:
        for layer in ("encoder", extra_layer):
            rows.append({"model": p["model"], "dataset": "digits", "layer": layer, "best_acc": 0.1,
                         "log_odds_gain": 99.0, "vci": None, "nc1": None, "nc1_cdnv": None})
            scale = 1.0 if layer == "encoder" else -1.0
            rows.append({**p, "dataset": AVERAGE, "layer": layer, "log_odds_gain": scale * p["log_odds_gain"],
                         "final_acc": 0.5, "depth": 0, "dim": 4, "n_train": None, "n_test": None})
    return rows


def test_study_runs_on_a_hand_made_table_and_writes_its_files(tmp_path, capsys):
    points = _points()
    (tmp_path / "linear_probe.json").write_text(json.dumps({"rows": _lp_rows(points)}))
    table = vci_study.main(["--results", str(tmp_path), "--out_dir", str(tmp_path / "out")])
    assert table == correlation_table(points)  # only the encoder's average rows count
    out = tmp_path / "out"
    payload = json.loads((out / "vci_study.json").read_text())
    assert payload["rows"] == table and payload["points"] == points and payload["layer"] == "encoder"
    assert "positive correlation" in payload["claim"] and "supports" in payload["claim"]
    assert (out / "vci_study.csv").read_text().splitlines()[0] == \
        "metric,x,n,pearson_r,pearson_p,spearman_rho,spearman_p,p_value,agrees_with_claim"
    assert (out / "vci_study.md").read_text().startswith("| metric | x | n |")
    png = (out / "vci_study.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    printed = capsys.readouterr().out
    assert "Xu & Liu (ICML 2023)" in printed and "agrees_with_claim" in printed

    other = vci_study.main(["--results", str(tmp_path), "--layer", "layer1"])  # another layer: the gains flip sign
    assert other[0]["pearson_r"] == pytest.approx(-table[0]["pearson_r"])
    assert (tmp_path / "vci_study.json").is_file()  # out_dir defaults to the results folder


def test_study_points_need_three_checkpoints_with_id_columns():
    rows = _lp_rows(_points())
    with pytest.raises(UserError, match="at least 3"):
        study_points([r for r in rows if r["model"] in ("m0", "m1")])
    rows[1] = {**rows[1], "vci": None}  # m0's encoder average row without VCI
    with pytest.raises(UserError, match="m0 lack the ID columns"):
        study_points(rows)
    with pytest.raises(UserError, match="no 'projector' layer; pass --layer with one of: encoder, layer1"):
        study_points(rows, "projector")


@pytest.mark.parametrize("args, message", [
    ([], "no results folder"),
    (["--results", "/nonexistent/folder"], "linear_probe.json is missing"),
])
def test_user_errors_exit_2_with_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        vci_study.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


def test_script_dry_run_issues_commands_that_parse(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "VALUES": "0 0.05 0.2", "EPOCHS": "3", "RUNS": str(tmp_path / "runs"),
           "OUT": str(tmp_path / "out"), "NPROC": "1"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "vci_study.sh")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line.strip() and "finished" not in line]
    entries = [Path(next(a for a in cmd if a.endswith(".py"))).name for cmd in commands]
    assert entries == ["pretrain.py"] * 3 + ["train_lp.py", "vci_study.py"]
    argv = [cmd[[i for i, a in enumerate(cmd) if a.endswith(".py")][0] + 1:] for cmd in commands]
    cwd = os.getcwd()
    os.chdir(ROOT)  # the --config paths are relative to the repository
    try:
        pretrain = [parse_config(PRETRAIN_DEFAULTS, a, types=PRETRAIN_TYPES, aliases=PRETRAIN_ALIASES)
                    for a in argv[:3]]
        lp = parse_config(TRANSFER_DEFAULTS, argv[3], types=TRANSFER_TYPES)
        study = parse_config(STUDY_DEFAULTS, argv[4], types=STUDY_TYPES)
    finally:
        os.chdir(cwd)
    assert [(c.alpha, c.output_dim, c.hidden_mlp, c.epochs, c.ckpt_file) for c in pretrain] == [
        (0.0, 128, 512, 3, "alpha_0.pth"), (0.05, 128, 512, 3, "alpha_0.05.pth"), (0.2, 128, 512, 3, "alpha_0.2.pth")]
    assert lp.ckpt == [str(tmp_path / "runs" / f"alpha_{v}.pth") for v in ("0", "0.05", "0.2")]
    assert lp.names == ["alpha_0", "alpha_0.05", "alpha_0.2"] and lp.layers == ["encoder"] and lp.id_metrics
    assert lp.dataset == "fashion_mnist:classes=0-5" and lp.out_dir == str(tmp_path / "out")
    assert study.results == str(tmp_path / "out") and study.layer == "encoder"
