"""The per-epoch collapse monitor (train/monitor.py) and its pretrain.py flags: the numbers it logs
are the NC metrics of the layers on the fixed training subset, it never changes what is trained,
and a layer the model lacks is a one-line error before any file is written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Subset

import pretrain
from data import build_dataset
from core.checkpoint import load_checkpoint, model_from_checkpoint
from train.monitor import EpochMonitor, cap_per_class, collapse_key
from metrics.nc import nc_metrics

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "fashion_mnist", "--classes", "0", "1", "2", "3", "4", "5", "--num_classes", "6",
        "--image_size", "16", "--arch", "resnet18", "--stem", "cifar", "--width", "0.125", "-b", "32",
        "--workers", "0", "--lr", "0.003", "--warmup_epochs", "1", "--device", "cpu", "--max_per_class", "30"]
OURS = ["--alpha", "0.05", "--output_dim", "64", "--hidden_mlp", "256"]
MONITOR = ["--monitor_layers", "layer3", "last_conv", "encoder", "projector_raw", "projector", "--monitor_max_per_class", "12"]
pytestmark = pytest.mark.usefixtures("one_thread")


def records(folder, name="model"):
    return [json.loads(line) for line in (Path(folder) / f"{name}.log.jsonl").read_text().splitlines()]


def test_the_logged_collapse_is_nc_of_the_layers_on_the_fixed_training_subset(tmp_path):
    pretrain.main([*TINY, *OURS, *MONITOR, "--epochs", "2", "--save_dir", str(tmp_path)])
    log = records(tmp_path)
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(r["monitor_seconds"] > 0 for r in log)
    # the same 12 images per class every epoch, drawn by the seed, evaluation transform
    train = build_dataset("fashion_mnist", "train", augment=False, image_size=16, classes=list(range(6)),
                          max_per_class=30, seed=0)
    subset = Subset(train, cap_per_class(train.targets, 12, seed=0).tolist())
    images, labels = map(torch.cat, zip(*DataLoader(subset, batch_size=100)))
    assert labels.bincount().tolist() == [12] * 6
    model = model_from_checkpoint(tmp_path / "model.pth").eval()
    with torch.no_grad():   # the layers straight from the modules, not through the monitor's hooks
        e = model.encoder
        stage3 = e.layer3(e.layer2(e.layer1(e.stem(images))))
        last = e.layer4[-1]
        conv = last.conv2(last.act(last.norm1(last.conv1(e.layer4[0](stage3)))))   # before norm2, add, act
        enc, proj, logits = model(images, return_all=True)
        raw = model.projector(enc)
    assert torch.allclose(raw / raw.norm(dim=1, keepdim=True), proj, atol=1e-6)
    for layer, feats in (("layer3", stage3.mean(dim=(2, 3))), ("last_conv", conv.mean(dim=(2, 3))), ("encoder", enc),
                         ("projector_raw", raw), ("projector", proj)):
        expected = nc_metrics(feats, labels, 6)
        for metric in ("nc1", "nc1_cdnv", "vci"):
            assert log[-1][collapse_key(metric, layer)] == pytest.approx(expected[metric], rel=1e-4), (metric, layer)
    assert log[-1]["clean_train_acc1"] == pytest.approx((logits.argmax(1) == labels).double().mean().item())
    assert log[0]["nc1/encoder"] != log[1]["nc1/encoder"]   # measured anew each epoch


def test_monitor_leaves_training_unchanged_and_skips_projector_layers_of_a_baseline(tmp_path):
    pretrain.main([*TINY, "--epochs", "2", "--save_dir", str(tmp_path / "plain")])
    pretrain.main([*TINY, *MONITOR, "--epochs", "2", "--save_dir", str(tmp_path / "watched")])
    plain = load_checkpoint(tmp_path / "plain" / "model.pth")["state_dict"]
    watched = load_checkpoint(tmp_path / "watched" / "model.pth")["state_dict"]
    assert plain.keys() == watched.keys() and all(torch.equal(plain[k], watched[k]) for k in plain)
    (first, second) = records(tmp_path / "watched")
    assert {k for k in second if "/" in k} == {f"{m}/{l}" for m in ("nc1", "nc1_cdnv", "vci")
                                                for l in ("layer3", "last_conv", "encoder")}
    assert [r["train_acc1"] for r in records(tmp_path / "plain")] == [first["train_acc1"], second["train_acc1"]]


def test_a_layer_the_model_lacks_is_one_line_before_any_file(tmp_path):
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(ROOT / "pretrain.py"), *TINY, "--epochs", "1", "--save_dir",
                             str(tmp_path / "run"), "--monitor_layers", "encoder", "layer9"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:") and "layer9" in errors[0] and "encoder" in errors[0]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_monitor_needs_something_to_measure_and_a_test_set_for_ood():
    data = [(torch.zeros(1, 8, 8), 0)]
    with pytest.raises(ValueError, match="layers to measure"):
        EpochMonitor(data, 2)
    with pytest.raises(ValueError, match="test set"):
        EpochMonitor(data, 2, ood={"x": data})
