"""pretrain.py --logger: TensorBoard event files (and wandb, when installed) hold the JSON-lines log's
numbers, value by value, at the epochs as steps, across a resume; a logger that cannot run is one line."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import pretrain
from core import tracking
from core.tracking import scalar_name, scalars

TINY = ["--dataset", "fashion_mnist", "--classes", "0", "1", "2", "3", "4", "5", "--num_classes", "6",
        "--image_size", "16", "--arch", "resnet18", "--stem", "cifar", "--width", "0.125", "-b", "32",
        "--workers", "0", "--lr", "0.003", "--warmup_epochs", "1", "--device", "cpu", "--max_per_class", "10",
        "--alpha", "0.05", "--output_dim", "64", "--hidden_mlp", "256", "--norm", "gn_ws",
        "--monitor_layers", "encoder", "projector_raw"]


def log_records(save_dir):
    return [json.loads(line) for line in (Path(save_dir) / "model.log.jsonl").read_text().splitlines()]


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series as TensorBoard itself reads the folder (purge markers honoured)."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_tensorboard_equals_jsonl(save_dir):
    records = log_records(save_dir)
    series = tensorboard_scalars(Path(save_dir) / "tensorboard" / "model")
    expected = {}
    for record in records:
        for name, value in scalars(record).items():
            expected.setdefault(name, []).append((record["epoch"], np.float32(value)))
    assert set(series) == set(expected)
    for name, points in expected.items():
        got = series[name]
        assert [step for step, _ in got] == [step for step, _ in points], name  # each epoch once, in order
        for (step, value), (_, want) in zip(got, points):
            assert np.float32(value) == want or (np.isnan(value) and np.isnan(want)), (name, step, value, want)
    return records, series


def test_scalar_names_end_in_the_jsonl_keys():
    assert [scalar_name(k) for k in ("loss", "ce_loss", "ent_loss", "lr", "img_per_s", "seconds")] == [
        "train/loss", "train/ce_loss", "train/ent_loss", "train/lr", "train/img_per_s", "train/seconds"]
    assert scalar_name("train_acc1") == "train/acc1" and scalar_name("val_acc1") == "val/acc1"
    assert scalar_name("nc1/encoder") == "nc1/encoder" and scalar_name("vci/projector") == "vci/projector"
    assert scalar_name("clean_train_acc1") == "monitor/clean_train_acc1"
    assert scalar_name("auroc_digits") == "monitor/auroc_digits"
    record = {"epoch": 3, "loss": 1.5, "resumed": {"from_epoch": 2}, "val_acc1": 0.5, "flag": True}
    assert scalars(record) == {"train/loss": 1.5, "val/acc1": 0.5}


def test_tensorboard_holds_the_jsonl_values_and_a_resume_continues_them(tmp_path):
    pretrain.main(TINY + ["--epochs", "2", "--save_dir", str(tmp_path), "--logger", "tensorboard"])
    records, series = assert_tensorboard_equals_jsonl(tmp_path)
    assert {"train/loss", "train/ent_loss", "train/acc1", "val/acc1", "train/lr", "train/img_per_s",
            "nc1/encoder", "nc1/projector_raw", "vci/encoder"} <= set(series)
    assert [r["epoch"] for r in records] == [1, 2]
    kept = tmp_path / "epoch2.pth"
    shutil.copy(tmp_path / "model.pth", kept)
    # a killed third epoch that reached the event file but not the checkpoint
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(tmp_path / "tensorboard" / "model")) as stray:
        stray.add_scalar("train/loss", 999.0, 3)
    pretrain.main(TINY + ["--epochs", "4", "--save_dir", str(tmp_path), "--logger", "tensorboard",
                          "--resume", str(kept), "--overwrite"])
    records, series = assert_tensorboard_equals_jsonl(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4] and "resumed" in records[2]
    assert 999.0 not in [v for _, v in series["train/loss"]]


def test_a_logger_added_on_resume_gets_the_epochs_already_trained(tmp_path):
    pretrain.main(TINY + ["--epochs", "1", "--save_dir", str(tmp_path)])
    assert not (tmp_path / "tensorboard").exists()
    pretrain.main(TINY + ["--epochs", "2", "--save_dir", str(tmp_path), "--logger", "jsonl", "tensorboard",
                          "--resume", str(tmp_path / "model.pth")])
    records, series = assert_tensorboard_equals_jsonl(tmp_path)
    assert [step for step, _ in series["train/loss"]] == [1, 2]


def test_a_fresh_run_replaces_the_event_files_of_the_run_it_overwrites(tmp_path):
    pretrain.main(TINY + ["--epochs", "2", "--save_dir", str(tmp_path), "--logger", "tensorboard"])
    pretrain.main(TINY + ["--epochs", "1", "--save_dir", str(tmp_path), "--logger", "tensorboard", "--overwrite",
                          "--lr", "0.01"])
    records, series = assert_tensorboard_equals_jsonl(tmp_path)
    assert [step for step, _ in series["train/loss"]] == [1]


def test_unknown_or_missing_logger_is_one_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(TINY + ["--epochs", "1", "--save_dir", str(tmp_path), "--logger", "mlflow"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0
    assert "--logger 'mlflow' is not a logger" in err and "tensorboard" in err and "wandb" in err
    monkeypatch.setattr(tracking, "module_available", lambda name: name != "wandb")
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(TINY + ["--epochs", "1", "--save_dir", str(tmp_path), "--logger", "tensorboard", "wandb"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0
    assert "--logger wandb needs the wandb package" in err and "pip install wandb" in err
    assert not any(tmp_path.iterdir())  # refused before any file was written


def test_wandb_offline_writes_under_save_dir_and_a_resume_keeps_its_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    pretrain.main(TINY + ["--epochs", "1", "--save_dir", str(tmp_path), "--logger", "wandb"])
    run_id = (tmp_path / "model.wandb_id").read_text().strip()
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].name.endswith(run_id) and list(runs[0].glob("*.wandb"))
    pretrain.main(TINY + ["--epochs", "2", "--save_dir", str(tmp_path), "--logger", "wandb",
                          "--resume", str(tmp_path / "model.pth")])
    assert (tmp_path / "model.wandb_id").read_text().strip() == run_id
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs)
