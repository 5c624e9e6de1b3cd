"""pretrain.py end to end on a Fashion-MNIST subset: learning, exact resume after a kill,
two-process DistributedDataParallel on the CPU, and the errors a user can cause."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pretrain
from core.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "fashion_mnist", "--classes", "0", "1", "2", "3", "4", "5", "--num_classes", "6",
        "--image_size", "16", "--arch", "resnet18", "--stem", "cifar", "--width", "0.125", "-b", "32",
        "--workers", "0", "--lr", "0.003", "--warmup_epochs", "1", "--device", "cpu"]
NC = ["--alpha", "0.05", "--output_dim", "64", "--hidden_mlp", "256", "--norm", "gn_ws"]


def run_cli(args, **kwargs):
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "pretrain.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


def failure_excerpt(stderr: str) -> str:
    """What a failed multi-process run printed that names its cause (torchrun's own summary only says
    which rank died): error, abort and traceback lines of every rank, then the tail."""
    marks = ("error", "terminate called", "what()", "abort", "traceback", "exception")
    causes = [line for line in stderr.splitlines() if any(m in line.lower() for m in marks)]
    return "\n".join(causes[:40]) + "\n--- tail ---\n" + stderr[-1500:]


def log_records(save_dir, name="model"):
    return [json.loads(l) for l in (Path(save_dir) / f"{name}.log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("variant", ["baseline", "nc"])
def test_few_epochs_lower_the_loss_and_beat_chance(tmp_path, variant):
    args = TINY + ["--max_per_class", "40", "--epochs", "4", "--save_dir", str(tmp_path)]
    summary = pretrain.main(args + (NC if variant == "nc" else []))
    records = log_records(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["ce_loss"] < records[0]["ce_loss"]
    assert summary["best_acc1"] > 1 / 6 + 0.15
    if variant == "nc":
        assert all(r["ent_loss"] != 0 for r in records)
        model = load_checkpoint(tmp_path / "model.pth")
        assert model["model_kwargs"]["nc_control"]["output_dim"] == 64
    assert (tmp_path / "best_model.pth").is_file() and (tmp_path / "model.config.yaml").is_file()


def test_resume_after_a_kill_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    args = TINY + NC + ["--max_per_class", "60", "--epochs", "3", "--augmentation"]
    pretrain.main(args + ["--save_dir", str(tmp_path / "full")])
    killed = tmp_path / "killed"
    env = dict(os.environ, TQDM_DISABLE="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "pretrain.py"), *args, "--save_dir", str(killed)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (killed / "model.pth").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = load_checkpoint(killed / "model.pth")["epoch"]
    assert 1 <= stopped_at < 3, "the run must be killed part-way for this test to mean anything"
    pretrain.main(args + ["--save_dir", str(killed), "--resume", str(killed / "model.pth")])
    a = load_checkpoint(tmp_path / "full" / "model.pth")
    b = load_checkpoint(killed / "model.pth")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert [r["epoch"] for r in log_records(killed)] == [1, 2, 3]
    assert [r["val_acc1"] for r in log_records(killed)] == [r["val_acc1"] for r in log_records(tmp_path / "full")]


def test_two_process_distributed_run_on_cpu(tmp_path):
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "pretrain.py"), *TINY, *NC, "--max_per_class", "20", "--epochs", "2", "--save_dir", str(tmp_path)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, failure_excerpt(result.stderr)
    assert "x 2 processes" in result.stdout
    ckpt = load_checkpoint(tmp_path / "model.pth")
    assert ckpt["epoch"] == 2 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert len(log_records(tmp_path)) == 2


def test_missing_data_path_is_one_clear_line(tmp_path):
    result = run_cli(TINY + ["--data", str(tmp_path / "nowhere"), "--epochs", "1", "--save_dir", str(tmp_path / "out")])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0] and lines[0].startswith("error:")
    assert not (tmp_path / "out" / "model.pth").exists()


def test_class_count_mismatch_is_one_clear_line(tmp_path):
    args = [a if a != "6" else "10" for a in TINY]  # --num_classes 10 for 6 selected classes
    result = run_cli(args + ["--epochs", "1", "--max_per_class", "5", "--save_dir", str(tmp_path)])
    assert result.returncode == 2
    assert "class-count mismatch" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_corrupt_checkpoint_on_resume_is_one_clear_line(tmp_path):
    bad = tmp_path / "model.pth"
    bad.write_bytes(b"\x00garbage" * 64)
    result = run_cli(TINY + ["--epochs", "1", "--max_per_class", "5", "--save_dir", str(tmp_path), "--resume", str(bad)])
    assert result.returncode == 2
    assert "is corrupt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_resume_accepts_older_checkpoints_and_rejects_another_model(tmp_path):
    args = TINY + ["--max_per_class", "10", "--save_dir", str(tmp_path)]
    pretrain.main(args + ["--epochs", "1"])
    ckpt = torch.load(tmp_path / "model.pth", weights_only=True)
    for key in ("spectral_norm", "activation", "shortcut"):  # arguments newer than the checkpoint
        ckpt["model_kwargs"].pop(key, None)
    torch.save(ckpt, tmp_path / "old.pth")
    pretrain.main(args + ["--epochs", "2", "--resume", str(tmp_path / "old.pth"), "--overwrite"])  # over model.pth
    assert load_checkpoint(tmp_path / "model.pth")["epoch"] == 2
    result = run_cli(args + ["--epochs", "3", "--width", "0.25", "--resume", str(tmp_path / "model.pth")])
    assert result.returncode == 2 and "holds a different model (width=0.125)" in result.stderr
