"""The paper's chain run for real on tiny data: `bash scripts/reproduce_paper.sh --smoke` writes small copies
of the nine datasets in their on-disk formats, runs every command of the full chain through the same scripts
at toy scale, and ends with Table 1 and Figure 1. A rerun continues where the chain stopped; a step that
leaves nothing for the next stops the chain in one line naming the missing file."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHAIN_VARS = ["NPROC", "NNODES", "ARCH", "ARCHS", "EXPT_NAME", "DRY_RUN", "WORK_DIR", "DEVICE", "PRETRAIN_FLAGS",
              "EVAL_FLAGS", "SMOKE_DIR", "OUT_DIR", "SAVE_DIR", "CKPT", "CKPT_WHICH", "WORKERS", "LAYERS"]
ARCHS = ("vgg17", "resnet18", "resnet34", "vit_tiny", "vit_small")
TASKS = ("nc", "ood", "linear_probe")


def smoke(folder: Path, timeout: int, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in CHAIN_VARS}
    full.update(SMOKE_DIR=str(folder), TQDM_DISABLE="1", DEVICE="cpu", **env)
    return subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_paper.sh"), "--smoke"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=timeout)


def failure(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-3000:] + result.stderr[-3000:]


def check_table(folder: Path, archs) -> list[dict]:
    """Table 1 of the chain: every model, every column filled; the claims of every pair; Figure 1."""
    rows = json.loads((folder / "results" / "paper" / "summary.json").read_text())
    expected = []
    for arch in archs:
        hook = "encoder" if arch.startswith("vit") else "last_conv"
        expected += [(f"{arch}_in100_baseline", hook), (f"{arch}_in100_nc", hook), (f"{arch}_in100_nc", "projector")]
    assert [(r["model"], r["layer"]) for r in rows] == expected
    columns = set(rows[0])
    assert len([c for c in columns if c.startswith("fpr95_")]) == 9 and len([c for c in columns if c.startswith("lp_")]) == 9
    for row in rows:
        assert set(row) == columns and all(v is not None for v in row.values()), row
        assert 0.0 <= row["fpr95_avg"] <= 1.0 and 0.0 <= row["lp_acc_avg"] <= 1.0 and row["nc1"] > 0
    claims = json.loads((folder / "results" / "paper" / "claims.json").read_text())
    assert [(c["pair"], c["number"]) for c in claims] == [(f"{a}_in100", n) for a in archs for n in (1, 2, 3, 4)]
    for name in ("summary.md", "nc1_vs_fpr95.png", "nc1_vs_transfer.png", "summary_by_layer.png"):
        assert (folder / "results" / "paper" / name).stat().st_size > 0
    return rows


def recorded_checkpoint(folder: Path, model: str, task: str) -> dict:
    content = json.loads((folder / "results" / model / f"{task}.json").read_text())
    return content.get("checkpoints", {}).get(model) or {"ckpt": content["config"]["ckpt"]}


@pytest.mark.slow
def test_the_whole_smoke_chain_fills_table_1_for_the_ten_models(tmp_path):
    result = smoke(tmp_path, timeout=5400)
    assert result.returncode == 0, failure(result)
    check_table(tmp_path, ARCHS)
    launched = [line for line in result.stderr.splitlines() if line.startswith("+ ") and "pretrain.py" in line]
    assert len(launched) == 10
    under_torchrun = [line for line in launched if "--nproc_per_node=2" in line]
    assert [line.split("--config ")[1].split()[0].rsplit("/", 1)[1] for line in under_torchrun] == [
        "resnet18_nc.yaml", "vit_tiny_nc.yaml"]
    assert result.stdout.count("x 2 processes") >= 2   # the two runs under torchrun trained as two processes
    assert "paper chain finished in" in result.stdout


@pytest.mark.slow
def test_a_rerun_skips_what_is_done_and_resumes_a_pretraining_that_has_epochs_left(tmp_path):
    """One CNN pair (ARCHS=resnet18): the chain, then the same command again (every step found done), then
    with one more epoch asked (each pretraining resumed from its last checkpoint, as after an interruption)."""
    first = smoke(tmp_path, timeout=1800, ARCHS="resnet18")
    assert first.returncode == 0, failure(first)
    check_table(tmp_path, ["resnet18"])
    results = [tmp_path / "results" / f"resnet18_in100_{v}" / f"{task}.json" for v in ("baseline", "nc") for task in TASKS]
    stamps = {p: p.stat().st_mtime_ns for p in results}
    again = smoke(tmp_path, timeout=1800, ARCHS="resnet18")
    assert again.returncode == 0, failure(again)
    assert again.stdout.count("has finished its 1 epochs; nothing to do") >= 2
    assert again.stdout.count(": skipped") == 6 and {p: p.stat().st_mtime_ns for p in results} == stamps
    longer = smoke(tmp_path, timeout=1800, ARCHS="resnet18", PRETRAIN_FLAGS="--epochs 2")
    assert longer.returncode == 0, failure(longer)
    assert "resuming ./checkpoints/resnet18/resnet18_in100_baseline.pth after epoch 1" in longer.stdout
    for variant in ("baseline", "nc"):
        model = f"resnet18_in100_{variant}"
        last = torch.load(tmp_path / "checkpoints" / "resnet18" / f"{model}.pth", weights_only=True, map_location="cpu")
        assert last["epoch"] == 2
        records = {recorded_checkpoint(tmp_path, model, task).get("sha256") for task in TASKS}
        assert len(records) == 1   # the three results of a model come from one checkpoint
    check_table(tmp_path, ["resnet18"])


def test_a_step_that_leaves_nothing_for_the_next_stops_the_chain_in_one_line(tmp_path):
    """A pretraining whose best checkpoint goes elsewhere (here a flag moves it): the evaluation that would
    read it never starts, and the chain ends with one line naming the file it looked for."""
    result = smoke(tmp_path, timeout=900, ARCHS="resnet18", PRETRAIN_FLAGS="--ckpt_file moved.pth")
    assert result.returncode == 2, failure(result)
    missing = "./checkpoints/resnet18/best_resnet18_in100_baseline.pth"
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"error: {missing} is missing: the pretraining of resnet18_in100_baseline")
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [last]
    assert (tmp_path / "checkpoints" / "resnet18" / "best_moved.pth").is_file()   # the step ran, elsewhere
    assert not (tmp_path / "results").exists() and "eval_nc.py" not in result.stderr


def test_a_result_is_current_when_it_records_the_checkpoint_it_was_made_from(tmp_path):
    """What a rerun skips (scripts/paper_chain.py current): the SHA-256 a result file records for the model;
    a file from before that record counts when its config names the checkpoint and it is newer."""
    import hashlib

    from scripts.paper_chain import is_current

    ckpt = tmp_path / "best_m.pth"
    ckpt.write_bytes(b"weights")
    result = tmp_path / "nc.json"
    for sha, current in ((hashlib.sha256(b"weights").hexdigest(), True), (hashlib.sha256(b"other").hexdigest(), False)):
        result.write_text(json.dumps({"rows": [], "checkpoints": {"m": {"path": str(ckpt), "sha256": sha}}}))
        assert is_current(result, ckpt, "m") is current
    result.write_text(json.dumps({"rows": [], "config": {"ckpt": [str(ckpt)]}}))
    assert is_current(result, ckpt, "m")
    os.utime(ckpt, (result.stat().st_mtime + 10, result.stat().st_mtime + 10))   # the checkpoint came after it
    assert not is_current(result, ckpt, "m")
    assert not is_current(tmp_path / "absent.json", ckpt, "m") and not is_current(result, tmp_path / "absent.pth", "m")


def test_the_data_check_reads_each_split_the_evaluations_read():
    from scripts.paper_chain import dataset_reads

    argv = ["--dataset", "imagenet100", "--data", "/in100", "--ood", "ninco=imagefolder:root=/n,holdout=0.2",
            "flowers102:root=/f", "--ood_splits", "flowers102=val", "--layers", "a"]
    reads = [(spec.label, spec.options.get("root"), split) for spec, split in dataset_reads(argv)]
    assert reads == [("imagenet100", "/in100", "train"), ("imagenet100", "/in100", "test"), ("ninco", "/n", "test"),
                     ("flowers102", "/f", "val")]
    argv = ["--transfer", "cub200=imagefolder:root=/c", "flowers102=flowers102:root=/f", "--test_splits", "flowers102=val"]
    assert [(spec.label, split) for spec, split in dataset_reads(argv)] == [
        ("cub200", "train"), ("cub200", "test"), ("flowers102", "train"), ("flowers102", "val")]
