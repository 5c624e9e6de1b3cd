"""eval_nc.py end to end on tiny checkpoints and embedded data."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eval_nc
from core.config import parse_config
from evaluate.runs import features, id_spec, open_runs, probe
from features import get_features
from evaluate.nc import NC_DEFAULTS, NC_TYPES
from evaluate.runs import layer_nc_metrics as layer_metrics
from metrics.nc import nc_metrics

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--max_per_class", "12", "--image_size", "16", "--probe_epochs", "3", "--device", "cpu"]


def test_two_checkpoints_every_layer_tables_and_figure(tmp_path, tiny_ckpts):
    args = ["--ckpt", str(tiny_ckpts["base"]), str(tiny_ckpts["ours"]), "--names", "base", "ours",
            "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path / "out"), *COMMON]
    rows = eval_nc.main(args)
    layers = {m: [r["layer"] for r in rows if r["model"] == m] for m in ("base", "ours")}
    assert layers["base"] == ["layer1", "layer2", "layer3", "last_conv", "layer4", "encoder"]
    assert layers["ours"] == layers["base"] + ["projector_raw", "projector"]
    head_rows = [r for r in rows if r["classifier"] == "model"]
    assert [(r["model"], r["layer"]) for r in head_rows] == [("base", "encoder"), ("ours", "projector")]
    assert all("nc4" in r and 0 <= r["nc4"] <= 1 for r in head_rows)
    assert all("nc4" not in r for r in rows if r["classifier"] is None)
    for name in ("nc.json", "nc.csv", "nc.md", "nc.png", "nc.config.yaml"):
        assert (tmp_path / "out" / name).is_file(), name
    assert json.loads((tmp_path / "out" / "nc.json").read_text())["rows"] == json.loads(json.dumps(rows))

    # the streamed metrics equal nc_metrics on the same cached features with the model's own head
    spec = {"name": "fashion_mnist", "split": "train", "classes": [0, 1, 2, 3, 4, 5], "max_per_class": 12,
            "image_size": 16}
    fs = get_features(tiny_ckpts["ours"], spec, ["projector"], cache_dir=tmp_path / "cache", show_progress=False)
    sd = torch.load(tiny_ckpts["ours"], weights_only=True)["state_dict"]
    ref = nc_metrics(fs["projector"], fs.labels, 6, sd["classifier.weight"], sd["classifier.bias"])
    row = next(r for r in rows if r["model"] == "ours" and r["layer"] == "projector")
    for key, value in ref.items():
        assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_probe_gives_classifier_metrics_at_every_layer(tmp_path, tiny_ckpts):
    rows = eval_nc.main(["--ckpt", str(tiny_ckpts["base"]), "--probe", "--layers", "layer2", "encoder",
                         "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path), *COMMON])
    assert [r["layer"] for r in rows] == ["layer2", "encoder"]
    assert all(r["classifier"] == "probe" and "nc3" in r and "bias_collapse" in r for r in rows)


def test_probe_features_train_a_layers_probe_on_another_layer(tmp_path, tiny_ckpts, capsys):
    """The official CNN protocol: projector statistics before the L2 normalization, its probe after."""
    common = ["--probe", "--layers", "last_conv", "projector_raw", "--probe_features", "projector_raw=projector",
              "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path), *COMMON]
    rows = eval_nc.main(["--ckpt", str(tiny_ckpts["ours"]), *common])
    assert [(r["layer"], r["classifier"]) for r in rows] == [("last_conv", "probe"), ("projector_raw", "probe(projector)")]
    cfg = parse_config(NC_DEFAULTS, ["--ckpt", str(tiny_ckpts["ours"]), *common], types=NC_TYPES)
    (run,) = open_runs(cfg)
    train = features(cfg, run, id_spec(cfg), "train", ["projector_raw", "projector"])
    by_hand = probe(cfg, train, "projector")
    expected = layer_metrics(train, "projector_raw", by_hand.weight, by_hand.bias)
    for key, value in expected.items():
        assert rows[1][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    # a baseline has no projector: the entry does not apply to it, and both models share one command
    rows = eval_nc.main(["--ckpt", str(tiny_ckpts["base"]), *common])
    assert [(r["layer"], r["classifier"]) for r in rows] == [("last_conv", "probe")]
    bad = [a if a != "projector_raw=projector" else "projector_raw=nope" for a in common]
    with pytest.raises(SystemExit):
        eval_nc.main(["--ckpt", str(tiny_ckpts["ours"]), *bad])
    assert "--probe_features: unknown layer 'nope'" in capsys.readouterr().err


def test_wrong_class_count_is_one_clear_line(tmp_path, tiny_ckpts):
    result = subprocess.run([sys.executable, str(ROOT / "eval_nc.py"), "--ckpt", str(tiny_ckpts["base"]),
                             "--dataset", "fashion_mnist:classes=0-3", "--cache_dir", str(tmp_path),
                             "--out_dir", str(tmp_path), *COMMON],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: class-count mismatch") and len(result.stderr.strip().splitlines()) == 1


def test_a_ddu_style_checkpoint_evaluates(tmp_path):
    from core.checkpoint import save_checkpoint
    from models import build_model

    model = build_model("resnet18", 6, stem="cifar", width=0.125, img_size=16, spectral_norm=3.0,
                        activation="leaky_relu", shortcut="avgpool", nc_control={"l2_features": True})
    ckpt = save_checkpoint(tmp_path / "ddu.pth", model=model, epoch=1, config={})
    rows = eval_nc.main(["--ckpt", str(ckpt), "--layers", "encoder", "head_input", "--cache_dir", str(tmp_path / "c"),
                         "--out_dir", str(tmp_path), *COMMON])
    assert [(r["layer"], r["classifier"]) for r in rows] == [("encoder", None), ("head_input", "model")]


def test_test_split_nc_and_its_ncc_accuracy_with_the_training_means(tmp_path, tiny_ckpts):
    """--splits train test: the test split's NC1 and CDNV on its own features, its NCC accuracy with the
    training split's class means, each against an independent computation on the cached features."""
    rows = eval_nc.main(["--ckpt", str(tiny_ckpts["ours"]), "--splits", "train", "test", "--layers", "encoder",
                         "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path), *COMMON])
    assert [(r["split"], r["layer"]) for r in rows] == [("train", "encoder"), ("test", "encoder")]
    spec = {"name": "fashion_mnist", "classes": [0, 1, 2, 3, 4, 5], "max_per_class": 12, "image_size": 16}
    get = lambda split: get_features(tiny_ckpts["ours"], {**spec, "split": split}, ["encoder"],
                                     cache_dir=tmp_path / "cache", show_progress=False)
    train, test = get("train"), get("test")
    x, y = train["encoder"].double(), train.labels
    means = torch.stack([x[y == c].mean(0) for c in range(6)])
    for split, fs in (("train", train), ("test", test)):
        h, labels = fs["encoder"].double(), fs.labels
        nearest = torch.cdist(h, means).argmin(1)
        row = next(r for r in rows if r["split"] == split)
        assert row["ncc_acc"] == pytest.approx(float((nearest == labels).double().mean()), abs=1e-12)
        assert row["nc1"] == pytest.approx(nc_metrics(fs["encoder"], labels, 6)["nc1"], rel=1e-9)
    assert rows[0]["ncc_acc"] != rows[1]["ncc_acc"] or rows[0]["nc1"] != rows[1]["nc1"]


def test_probe_order_reaches_the_probe_and_a_bad_one_is_one_line(tmp_path, tiny_ckpts, monkeypatch, capsys):
    import evaluate.runs

    orders = []
    real = evaluate.runs.train_probe
    monkeypatch.setattr(evaluate.runs, "train_probe", lambda *a, **k: orders.append(k["order"]) or real(*a, **k))
    args = ["--ckpt", str(tiny_ckpts["base"]), "--probe", "--layers", "encoder", "--bootstrap", "0",
            "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path), *COMMON]
    eval_nc.main([*args, "--probe_order", "fixed"])
    assert orders == ["fixed"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        eval_nc.main([*args, "--probe_order", "sorted"])
    assert capsys.readouterr().err.strip() == "error: --probe_order must be one of shuffle, fixed, got 'sorted'"
