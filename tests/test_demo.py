"""The demo pipeline end to end at a tiny scale (scripts/demo.sh with smaller settings), and the
summary's table logic on hand-made results."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from engine.summary import layer_table

ROOT = Path(__file__).resolve().parents[1]


def test_demo_script_end_to_end_at_tiny_scale(tmp_path):
    env = dict(os.environ, RUNS=str(tmp_path / "runs"), OUT=str(tmp_path / "out"), CACHE=str(tmp_path / "cache"),
               EPOCHS="2", IMAGE_SIZE="16", TRAIN_PER_CLASS="20", EVAL_PER_CLASS="8", PROBE_EPOCHS="2",
               NC_FLAGS="--alpha 0.05 --output_dim 128 --hidden_mlp 512", TQDM_DISABLE="1")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    rows = json.loads((out / "summary.json").read_text())
    assert [(r["model"], r["layer"]) for r in rows] == [("baseline", "encoder"), ("ours", "encoder"), ("ours", "projector")]
    for row in rows:
        for key in ("id_acc", "nc1", "vci", "fpr95_avg", "lp_acc_avg"):
            assert isinstance(row[key], float), key
        fprs = [v for k, v in row.items() if k.startswith("fpr95_") and k != "fpr95_avg"]
        assert len(fprs) == 4 and row["fpr95_avg"] == pytest.approx(sum(fprs) / 4)
    for name in ("summary.csv", "summary.md", "summary_by_layer.png", "nc1_vs_fpr95.png", "nc1_vs_transfer.png",
                 "nc.png", "ood_energy_hist.png", "linear_probe.png"):
        assert (out / name).stat().st_size > 0, name
    assert "Pearson R across all layers" in result.stdout and "demo finished" in result.stdout


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
