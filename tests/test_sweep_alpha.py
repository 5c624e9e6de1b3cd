"""scripts/sweep_alpha.sh: its commands (a dry run) and, in the slow suite, a tiny real sweep to the knob table."""
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sweep(tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("ALPHAS", "SEEDS", "JOBS", "STUDY_RUNS")}
    return subprocess.run(["bash", str(ROOT / "scripts" / "sweep_alpha.sh")], cwd=ROOT, capture_output=True, text=True,
                          env={**base, "BASE": str(tmp_path / "results"), "RUNS_BASE": str(tmp_path / "runs"),
                               "CACHE": str(tmp_path / "cache"), **env}, timeout=1800)


def test_dry_run_trains_the_grid_and_the_pairings_then_summarizes(tmp_path):
    result = sweep(tmp_path, DRY_RUN="1", ALPHAS="0 0.05 0.5", SEEDS="3")
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if "/python" in line]
    trained = [c[c.index("--ckpt_file") + 1] for c in commands if c[1].endswith("pretrain.py")]
    assert trained == [f"alpha{a}_{p}.pth" for a in ("0", "0.05", "0.5") for p in ("off", "on")] + \
        ["alpha0_off_gn.pth", "alpha0.05_on_gn.pth"]
    gn = next(c for c in commands if "alpha0.05_on_gn.pth" in c)
    assert gn[gn.index("--norm") + 1] == "gn_ws" and "--output_dim" in gn and gn[gn.index("--seed") + 1] == "3"
    entries = [Path(c[1]).name for c in commands]
    assert entries[-5:] == ["eval_nc.py", "eval_ood.py", "train_lp.py", "summarize.py", "summarize.py"]
    assert commands[-1][2] == "--knob"


@pytest.mark.slow
def test_a_tiny_sweep_ends_in_the_knob_table(tmp_path):
    tiny = {"ALPHAS": "0 0.05", "SEEDS": "0 1", "EPOCHS": "1", "TRAIN_PER_CLASS": "20", "EVAL_PER_CLASS": "10",
            "PROBE_EPOCHS": "2"}
    result = sweep(tmp_path, **tiny)
    assert result.returncode == 0, result.stderr[-2000:]
    knob = json.loads((tmp_path / "results" / "knob.json").read_text())
    assert [(r["alpha"], r["projector"]) for r in knob["rows"]] == [(0.0, "off"), (0.0, "on"), (0.05, "off"),
                                                                      (0.05, "on")]
    assert all(r["nc1_encoder"] is not None and r["id_acc"] is not None for r in knob["rows"])
    pairings = json.loads((tmp_path / "results" / "pairings.json").read_text())["rows"]
    assert {r["pairing"] for r in pairings} == {"batchnorm", "official", "groupnorm"}
    assert (tmp_path / "results" / "knob.png").is_file()
