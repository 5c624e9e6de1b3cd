"""The embedded study's scripts (reproduce_embedded.sh, sweep_embedded.sh) and the sweep's table:
which runs they make, with which flags, and what the sweep reads off a study folder."""
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

import summarize
from core.config import parse_config
from train.options import PRETRAIN_ALIASES, PRETRAIN_DEFAULTS, PRETRAIN_TYPES
from train.recipes import check_recipe

ROOT = Path(__file__).resolve().parents[1]


def dry_run(script, **env):
    result = subprocess.run(["bash", str(ROOT / "scripts" / script)], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, DRY_RUN="1", **env), timeout=120)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if ".py " in line]
    split = lambda cmd: next((Path(a).name, cmd[i + 1:]) for i, a in enumerate(cmd) if a.endswith(".py"))
    return [split(cmd) for cmd in commands]


def test_the_study_trains_the_four_arms_per_seed_with_one_normalization_then_checks_the_claims():
    commands = dry_run("reproduce_embedded.sh", SEEDS="3 4", EPOCHS="7", TRAIN_PER_CLASS="150", EVAL_PER_CLASS="500")
    assert [entry for entry, _ in commands] == (["pretrain.py"] * 4 + ["eval_nc.py", "eval_ood.py", "train_lp.py",
                                                                      "summarize.py"]) * 2 + ["summarize.py"]
    arms = []
    for entry, argv in commands:
        if entry == "pretrain.py":
            cfg = parse_config(PRETRAIN_DEFAULTS, argv, types=PRETRAIN_TYPES, aliases=PRETRAIN_ALIASES)
            check_recipe(cfg)
            arms.append((cfg.seed, Path(cfg.ckpt_file).stem, cfg.alpha, cfg.output_dim, cfg.hidden_mlp, cfg.norm,
                         cfg.epochs, cfg.monitor_layers))
        elif entry in ("eval_nc.py", "eval_ood.py", "train_lp.py"):
            names = argv[argv.index("--names") + 1:argv.index("--out_dir")]
            assert names == ["baseline", "entropy", "projector", "ours"]
            # NC on the training data = on the images the arms were trained on: the ID spec caps at TRAIN_PER_CLASS
            assert argv[argv.index("--dataset") + 1] == "fashion_mnist:classes=0-5,max_per_class=150"
            assert argv[argv.index("--max_per_class") + 1] == "500"   # the OOD and transfer sets
    monitored = ["last_conv", "encoder", "projector_raw", "projector"]
    assert arms == [(seed, arm, alpha, dim, 4 * dim, "bn", 7, monitored)
                    for seed in (3, 4) for arm, alpha, dim in (("baseline", 0.0, 0), ("entropy", 0.05, 0),
                                                               ("projector", 0.0, 128), ("ours", 0.05, 128))]
    per_seed = [argv for entry, argv in commands if entry == "summarize.py"]
    assert per_seed[0][:2] == ["--results", "results/embedded/seed3"] and per_seed[0][2:] == ["--runs", "runs/embedded/seed3"]
    assert per_seed[-1] == ["--seeds", "results/embedded/seed3", "results/embedded/seed4", "--out_dir", "results/embedded"]


def test_the_sweep_runs_the_study_at_each_length_then_tabulates_it():
    commands = dry_run("sweep_embedded.sh", LENGTHS="5 9", SEEDS="0")
    epochs = [int(argv[argv.index("--epochs") + 1]) for entry, argv in commands if entry == "pretrain.py"]
    assert epochs == [5, 5, 9, 9]   # baseline and ours at each length
    assert commands[-1] == ("summarize.py", ["--sweep", "results/sweep/epochs5", "results/sweep/epochs9",
                                             "--out_dir", "results/sweep"])


# --------------------------------------------------------------------------- the sweep's table

def write_study(folder, epochs, seeds=2, clean=lambda e, n: min(1.0, 0.5 + 0.5 * e / n)):
    claims = []
    for seed in range(seeds):
        sub = folder / f"seed{seed}"
        sub.mkdir(parents=True)
        summary = [{"model": m, "layer": "encoder", "nc1": nc1 + 0.01 * seed} for m, nc1 in (("baseline", 0.2), ("ours", 0.3))]
        (sub / "summary.json").write_text(json.dumps(summary))
        curve = lambda: [{"epoch": e, "seconds": 2.0, "monitor_seconds": 0.1, "img_per_s": 300.0 + seed,
                          "clean_train_acc1": clean(e, epochs), "val_acc1": 0.8, "nc1/encoder": 1.0 / e}
                         for e in range(1, epochs + 1)]
        (sub / "curves.json").write_text(json.dumps({"models": {"baseline": curve(), "ours": curve()}}))
        (sub / "timing.json").write_text(json.dumps({"seconds": 50, "train_seconds": 40, "eval_seconds": 10 + seed,
                                                     "train_per_class": 100}))
    for number in (1, 2, 3, 4):
        claims.append({"hook": "encoder", "number": number, "claim": f"claim {number}", "ours_mean": 0.3,
                       "other_mean": 0.2, "diff_mean": 0.01 * epochs, "diff_ci_low": 0.01 * epochs - 0.05,
                       "diff_ci_high": 0.01 * epochs + 0.05,
                       "holds_in": "2/2"})
    (folder / "claims.json").write_text(json.dumps({"rows": claims}))


def test_sweep_table_reads_the_terminal_phase_and_the_cost_of_each_length(tmp_path):
    write_study(tmp_path / "long", 9)
    write_study(tmp_path / "short", 5)
    rows = summarize.main(["--sweep", str(tmp_path / "long"), str(tmp_path / "short"), "--out_dir", str(tmp_path / "out")])
    assert [r["epochs"] for r in rows] == [5, 9]
    short, long = rows
    assert short["base_clean_train_top1"] == 1.0 and short["base_val_top1"] == 0.8
    # last epoch minus the epoch at 75% of training: 1/9 - 1/7 for NC1 over 9 epochs
    assert long["base_monitor_nc1_late_change"] == pytest.approx(1 / 9 - 1 / 7)
    assert long["base_clean_train_top1_late_change"] == pytest.approx(1.0 - (0.5 + 0.5 * 7 / 9))
    assert long["baseline_nc1_encoder"] == pytest.approx(0.205) and long["ours_nc1_encoder_std"] > 0
    assert long["train_seconds_per_run"] == pytest.approx(9 * 2.1) and long["img_per_s"] == 300.5
    assert long["monitor_seconds_per_epoch"] == pytest.approx(0.1) and long["eval_seconds_per_seed"] == 10.5
    claims = json.loads((tmp_path / "out" / "sweep_claims.json").read_text())["rows"]
    assert [(c["number"], c["epochs"]) for c in claims[:2]] == [(1, 5), (1, 9)]
    assert (tmp_path / "out" / "sweep.png").stat().st_size > 10_000 and (tmp_path / "out" / "sweep.md").is_file()
    write_study(tmp_path / "again", 9)
    with pytest.raises(SystemExit):   # the same length twice
        summarize.main(["--sweep", str(tmp_path / "long"), str(tmp_path / "again"), "--out_dir", str(tmp_path / "x")])


@pytest.mark.slow
def test_the_sweep_and_the_study_end_to_end_at_tiny_scale(tmp_path):
    env = dict(os.environ, BASE=str(tmp_path / "sweep"), RUNS_SWEEP=str(tmp_path / "runs"), CACHE=str(tmp_path / "cache"),
               LENGTHS="1 2", SEEDS="0 1", ARMS="baseline entropy projector ours", IMAGE_SIZE="16",
               TRAIN_PER_CLASS="20", EVAL_PER_CLASS="8", PROBE_EPOCHS="2", MONITOR_PER_CLASS="10", TQDM_DISABLE="1")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "sweep_embedded.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=3000)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = tmp_path / "sweep" / "epochs2"
    claims = json.loads((study / "claims.json").read_text())["rows"]
    assert [(c["hook"], c["number"]) for c in claims] == [(h, n) for h in ("last_conv", "encoder") for n in (1, 2, 3, 4)]
    assert all(c["seeds_run"] == 2 and c["diff_ci_low"] <= c["diff_mean"] <= c["diff_ci_high"] for c in claims)
    effects = json.loads((study / "ablation.json").read_text())["rows"]
    assert [(r["hook"], r["metric"]) for r in effects] == [(h, m) for h in ("last_conv", "encoder")
                                                           for m in ("nc1", "lp_acc_avg", "fpr95_avg")]
    for name in ("nc1_over_training.png", "ablation.md", "claims.md"):
        assert (study / name).stat().st_size > 0
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"]
    assert [r["epochs"] for r in rows] == [1, 2] and all(r["seeds"] == 2 for r in rows)
    assert "study finished" in result.stdout


def test_the_id_spec_of_the_evaluation_is_the_pretraining_set():
    from data import build_dataset, parse_spec
    spec = parse_spec("fashion_mnist:classes=0-5,max_per_class=40")   # demo.sh's ID spec at TRAIN_PER_CLASS=40
    evaluated = build_dataset(**spec.kwargs(image_size=16, max_per_class=500, seed=3), split="train")
    trained = build_dataset("fashion_mnist", "train", augment=False, image_size=16, classes=list(range(6)),
                            max_per_class=40, seed=3)
    assert len(evaluated) == len(trained) == 240
    assert all(torch.equal(evaluated[i][0], trained[i][0]) and evaluated[i][1] == trained[i][1] for i in range(0, 240, 7))
