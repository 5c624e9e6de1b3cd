"""pretrain.py at the edges: two runs into one folder, starts that are refused or fail before the
first checkpoint, flags that would build another model than the checkpoint records, the operating
system refusing a write, and the messages that say what to do next."""
import errno
import os
import socket
from pathlib import Path

import pytest
import torch

import pretrain
import train.loop as trainer
from core.checkpoint import load_checkpoint
from edges import TINY, error_line, files, held_elsewhere, read_only, run_script, write_images


# --------------------------------------------------------------------------- 1. one run per folder

def test_a_second_run_into_the_folder_of_a_running_one_is_refused_naming_it(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    second = []
    evaluate = trainer.evaluate

    def meanwhile(*args, **kwargs):  # while the first run trains, another starts into the same folder
        if not second:
            second.append(run_script("pretrain.py", *TINY, "--epochs", "2", "--save_dir", str(folder)))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", meanwhile)
    pretrain.main(TINY + ["--epochs", "2", "--save_dir", str(folder)])
    refused = second[0]
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    line = refused.stderr.strip()
    assert line.startswith(f"error: --save_dir {folder} is in use by another pretraining run of model.pth")
    assert f"pid {os.getpid()} on {socket.gethostname()}" in line and "--ckpt_file" in line
    assert [r["epoch"] for r in load_checkpoint(folder / "model.pth")["history"]] == [1, 2]
    assert (folder / "model.log.jsonl").read_text().count("\n") == 2  # the log holds one run
    assert not any(name.endswith(".lock") for name in files(folder))  # released at the end


def test_another_run_name_in_a_held_folder_is_another_run(capsys, tmp_path):
    folder = tmp_path / "run"
    with held_elsewhere(folder, "model.pth", "pretraining run of model.pth", "--save_dir") as holder:
        line = error_line(capsys, pretrain.main, TINY + ["--epochs", "1", "--save_dir", str(folder)])
        assert f"is in use by another pretraining run of model.pth (pid {holder.pid} on" in line
        pretrain.main(TINY + ["--epochs", "1", "--save_dir", str(folder), "--ckpt_file", "other.pth"])
    assert load_checkpoint(folder / "other.pth")["epoch"] == 1 and not (folder / "model.pth").exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".model.pth.lock").write_text('{"pid": 999999, "host": "gone", "started": "then", "command": "x"}\n')
    pretrain.main(TINY + ["--epochs", "1", "--save_dir", str(folder)])  # the OS released the dead process's lock
    assert load_checkpoint(folder / "model.pth")["epoch"] == 1 and not (folder / ".model.pth.lock").exists()


# --------------------------------------------------------------------------- 7. nothing half-written

def test_a_batch_too_small_for_the_entropy_term_is_refused_before_any_file(capsys, tmp_path):
    line = error_line(capsys, pretrain.main, TINY + ["--epochs", "1", "-b", "1", "--alpha", "0.05",
                                                     "--save_dir", str(tmp_path / "run")])
    assert "--alpha 0.05 needs batches of at least 2 samples" in line and "-b 1 gives 1" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("broken", ["a/0.jpg", "b/2.jpg"])  # read before the start, or in the first epoch
def test_a_truncated_image_leaves_no_file_of_the_run(capsys, tmp_path, broken):
    from PIL import Image

    root = tmp_path / "data"
    for path in write_images(root, {"train": {"a": 3, "b": 3}, "test": {"a": 1, "b": 1}}):
        Image.open(path).convert("RGB").save(path.with_suffix(".jpg"), quality=90)
        path.unlink()
    jpeg = root / "train" / broken
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    run = tmp_path / "run"
    args = ["--dataset", "imagefolder", "--data", str(root), "--num_classes", "2", "--image_size", "16", "--arch",
            "resnet18", "--stem", "cifar", "--width", "0.125", "-b", "2", "--workers", "0", "--epochs", "1",
            "--warmup_epochs", "0", "--device", "cpu", "--save_dir", str(run), "--no-augmentation"]
    line = error_line(capsys, pretrain.main, args)
    assert f"{jpeg} is not a readable image" in line
    assert not run.exists(), files(run)  # no config, no empty log, no lock, no folder


# --------------------------------------------------------------------------- 5. flags that change the model

@pytest.mark.parametrize("flags, shown", [
    (["--output_dim", "8", "--hidden_mlp", "0"], "--output_dim 8 with --hidden_mlp 0 builds no projector"),
    (["--output_dim", "0", "--hidden_mlp", "32"], "--hidden_mlp 32 with --output_dim 0 builds no projector"),
    (["--output_dim", "4", "--hidden_mlp", "16"], "--output_dim 4 is below the 6 classes"),
])
def test_flags_that_would_build_another_model_than_recorded_are_refused(capsys, tmp_path, flags, shown):
    line = error_line(capsys, pretrain.main, TINY + ["--epochs", "1", "--save_dir", str(tmp_path / "run"), *flags])
    assert shown in line and not (tmp_path / "run").exists()
    if "below" in shown:
        assert "(rank 3)" in line and "6 class means need 5 dimensions" in line


def test_a_learnable_projector_narrower_than_the_classes_makes_no_etf_claim(tmp_path):
    pretrain.main(TINY + ["--epochs", "1", "--save_dir", str(tmp_path), "--output_dim", "4", "--hidden_mlp", "16",
                          "--projector", "learnable"])
    assert load_checkpoint(tmp_path / "model.pth")["model_kwargs"]["nc_control"]["output_dim"] == 4


# --------------------------------------------------------------------------- 6. the operating system says no

def test_a_read_only_save_dir_is_one_line_naming_it(capsys, tmp_path, monkeypatch):
    with read_only(tmp_path / "ro", monkeypatch) as folder:
        line = error_line(capsys, pretrain.main, TINY + ["--epochs", "1", "--save_dir", str(folder / "run")])
    assert line.startswith(f"error: cannot create --save_dir {folder / 'run'}: Permission denied (EACCES)")
    with read_only(tmp_path / "ro2", monkeypatch) as folder:
        line = error_line(capsys, pretrain.main, TINY + ["--epochs", "1", "--save_dir", str(folder)])
    assert line.startswith(f"error: cannot write in --save_dir {folder}: Permission denied (EACCES)")


@pytest.mark.parametrize("flags, shown", [
    (["--ckpt_file", ""], "--ckpt_file must be a file name such as model.pth"),
    (["--ckpt_file", "sub/model.pth"], "--ckpt_file must be a file name such as model.pth"),
])
def test_a_checkpoint_name_that_is_no_file_name_is_one_line(capsys, tmp_path, flags, shown):
    line = error_line(capsys, pretrain.main, TINY + ["--epochs", "1", "--save_dir", str(tmp_path / "run"), *flags])
    assert shown in line and not (tmp_path / "run").exists()


def test_a_save_dir_that_is_a_file_is_one_line(capsys, tmp_path):
    (tmp_path / "run").write_text("notes")
    line = error_line(capsys, pretrain.main, TINY + ["--epochs", "1", "--save_dir", str(tmp_path / "run")])
    assert line == f"error: --save_dir {tmp_path / 'run'} is a file, not a folder; move it or pass another --save_dir"


def fill_disk_at(monkeypatch, target: str, call: int) -> None:
    """``torch.save`` into the temporary of ``target`` fails as a full disk does, from its ``call``-th time on."""
    real, seen = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        if Path(getattr(f, "name", str(f))).name.startswith(f".{target}@"):
            seen["n"] += 1
            if seen["n"] >= call:
                f.write(b"PK\x03\x04 partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)


def test_a_full_disk_at_the_first_checkpoint_names_the_file_that_can_start_a_new_run(capsys, tmp_path, monkeypatch):
    fill_disk_at(monkeypatch, "model.pth", 1)
    line = error_line(capsys, pretrain.main, TINY + ["--epochs", "2", "--save_dir", str(tmp_path)])
    assert line.startswith(f"error: cannot write {tmp_path / 'model.pth'}: No space left on device (ENOSPC)")
    assert line.endswith("model.pth was not written")
    monkeypatch.undo()
    assert "model.pth" not in files(tmp_path) and "best_model.pth" in files(tmp_path)
    line = error_line(capsys, pretrain.main, TINY + ["--epochs", "2", "--save_dir", str(tmp_path),
                                                     "--resume", str(tmp_path / "model.pth")])
    assert f"--init_from {tmp_path / 'best_model.pth'}" in line and "continue it with --resume" not in line


def test_a_full_disk_later_keeps_the_last_checkpoint_which_the_rerun_names(capsys, tmp_path, monkeypatch):
    fill_disk_at(monkeypatch, "model.pth", 2)
    line = error_line(capsys, pretrain.main, TINY + ["--epochs", "2", "--save_dir", str(tmp_path)])
    assert "No space left on device (ENOSPC)" in line and line.endswith("model.pth keeps its previous epoch")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "model.pth")["epoch"] == 1
    assert not [name for name in files(tmp_path) if name.endswith(".tmp")]
    line = error_line(capsys, pretrain.main, TINY + ["--epochs", "2", "--save_dir", str(tmp_path)])
    assert f"continue it with --resume {tmp_path / 'model.pth'}" in line  # a file that exists and resumes


# --------------------------------------------------------------------------- 8. messages that name the checkpoint

def test_resuming_a_checkpoint_with_non_finite_state_names_it(capsys, tmp_path):
    pretrain.main(TINY + ["--epochs", "1", "--save_dir", str(tmp_path)])
    ckpt = torch.load(tmp_path / "model.pth", weights_only=True)
    first = next(iter(ckpt["optimizer"]["state"].values()))
    first["exp_avg_sq"].fill_(float("nan"))
    torch.save(ckpt, tmp_path / "model.pth")
    line = error_line(capsys, pretrain.main, TINY + ["--epochs", "2", "--save_dir", str(tmp_path),
                                                     "--resume", str(tmp_path / "model.pth")])
    assert f"--resume {tmp_path / 'model.pth'} holds non-finite values in optimizer." in line
    assert "lower --lr" not in line and "use an earlier checkpoint" in line
