"""The demo pipeline end to end at a tiny scale (scripts/demo.sh with smaller settings), and the
summary's table logic on hand-made results."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from study.summary import layer_table

ROOT = Path(__file__).resolve().parents[1]


def test_demo_script_end_to_end_at_tiny_scale(tmp_path):
    env = dict(os.environ, RUNS=str(tmp_path / "runs"), OUT=str(tmp_path / "out"), CACHE=str(tmp_path / "cache"),
               EPOCHS="2", IMAGE_SIZE="16", TRAIN_PER_CLASS="20", EVAL_PER_CLASS="8", PROBE_EPOCHS="2",
               MONITOR_PER_CLASS="10", TQDM_DISABLE="1")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1800)  # a bound for a loaded, shared CPU
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    rows = json.loads((out / "summary.json").read_text())
    assert [(r["model"], r["layer"]) for r in rows] == [("baseline", "last_conv"), ("baseline", "encoder"),
                                                        ("ours", "last_conv"), ("ours", "encoder"),
                                                        ("ours", "projector_raw"), ("ours", "projector")]
    for row in rows:
        for key in ("id_acc", "nc1", "vci", "fpr95_avg", "lp_acc_avg"):
            assert isinstance(row[key], float), key
        fprs = [v for k, v in row.items() if k.startswith("fpr95_") and k != "fpr95_avg"]
        assert len(fprs) == 4 and row["fpr95_avg"] == pytest.approx(sum(fprs) / 4)
    for name in ("summary.csv", "summary.md", "summary_by_layer.png", "nc1_vs_fpr95.png", "nc1_vs_transfer.png",
                 "nc.png", "ood_energy_hist.png", "linear_probe.png", "nc1_over_training.png"):
        assert (out / name).stat().st_size > 0, name
    assert "Pearson R across all layers" in result.stdout and "demo finished" in result.stdout
    # the claims of this seed, in words and as four objects
    claims = json.loads((out / "claims.json").read_text())
    assert len(claims) == 4 and all({"claim", "ours", "other", "holds"} <= set(c) for c in claims)
    table = {(r["model"], r["layer"]): r for r in rows}
    assert all(c["hook"] == "last_conv" for c in claims)   # the paper's hook point
    assert (claims[0]["ours"], claims[0]["other"]) == (table[("ours", "last_conv")]["nc1"], table[("baseline", "last_conv")]["nc1"])
    assert claims[1]["ours"] == table[("ours", "projector_raw")]["nc1"] and claims[2]["ours"] == table[("ours", "projector")]["fpr95_avg"]
    for c in claims:
        assert f"({c['number']}) {'holds' if c['holds'] else 'does not hold'}: {c['claim']}" in result.stdout
    # collapse over training: every epoch of both runs, the projector only where there is one
    curves = json.loads((out / "curves.json").read_text())["models"]
    assert [r["epoch"] for r in curves["baseline"]] == [1, 2] and [r["epoch"] for r in curves["ours"]] == [1, 2]
    assert all("nc1/last_conv" in r and "nc1/encoder" in r and "nc1/projector_raw" not in r for r in curves["baseline"])
    assert all(r["nc1/projector_raw"] > 0 and r["nc1/projector"] > 0 and r["monitor_seconds"] > 0 for r in curves["ours"])
    timing = json.loads((out / "timing.json").read_text())
    assert timing["seconds"] == timing["train_seconds"] + timing["eval_seconds"] and timing["arms"] == "baseline ours"
    assert timing["train_cpu_seconds"] > 0 and timing["eval_cpu_seconds"] > 0


def test_demo_rejects_an_unknown_arm_before_training(tmp_path):
    env = dict(os.environ, RUNS=str(tmp_path / "runs"), OUT=str(tmp_path / "out"), ARMS="baseline ourz")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "error: unknown arm 'ourz'" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_layer_table_joins_the_three_result_sets():
    nc = [{"model": "m", "split": "train", "layer": l, "depth": d, "nc1": 1.0 + d, "vci": 0.5} for d, l in
          enumerate(["layer1", "encoder"])] + [{"model": "m", "split": "test", "layer": "encoder", "depth": 1,
                                                 "nc1": 99.0, "vci": 0.0}]
    ood = [{"model": "m", "layer": "encoder", "scorer": "energy", "ood": o, "fpr95": f, "id_acc": 0.9}
           for o, f in (("a", 0.2), ("b", 0.4), ("average", 0.3))]
    ood += [{"model": "m", "layer": "encoder", "scorer": "knn", "ood": "average", "fpr95": 0.0, "id_acc": 0.9}]
    lp = [{"model": "m", "layer": "encoder", "dataset": d, "best_acc": a} for d, a in (("x", 0.6), ("average", 0.6))]
    rows = layer_table(nc, ood, lp)
    assert rows == [{"model": "m", "layer": "encoder", "depth": 1, "id_acc": 0.9, "nc1": 2.0, "vci": 0.5,
                     "fpr95_a": 0.2, "fpr95_b": 0.4, "fpr95_avg": 0.3, "lp_x": 0.6, "lp_acc_avg": 0.6}]
