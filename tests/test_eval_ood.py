"""eval_ood.py end to end on tiny checkpoints and embedded data."""
import json

import numpy as np
import pytest
import torch

import eval_ood
from features import get_features
from evaluate.probe import probe_logits, train_probe
from ood import detection_metrics

COMMON = ["--max_per_class", "10", "--image_size", "16", "--probe_epochs", "2", "--device", "cpu"]


def test_paper_protocol_rows_averages_files(tmp_path, tiny_ckpts):
    rows = eval_ood.main(["--ckpt", str(tiny_ckpts["base"]), str(tiny_ckpts["ours"]), "--names", "base", "ours",
                          "--ood", "near=fashion_mnist:classes=6-9", "digits",
                          "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path / "out"), *COMMON])
    keys = [(r["model"], r["layer"], r["scorer"], r["ood"]) for r in rows]
    assert keys == [("base", "encoder", "energy", o) for o in ("near", "digits", "average")] + \
                   [("ours", layer, "energy", o) for layer in ("encoder", "projector") for o in ("near", "digits", "average")]
    for i in range(2, len(rows), 3):
        for k in ("fpr95", "auroc", "aupr_in", "aupr_out"):
            assert rows[i][k] == pytest.approx((rows[i - 2][k] + rows[i - 1][k]) / 2)
            assert 0 <= rows[i][k] <= 1
    for name in ("ood.json", "ood.csv", "ood.md", "ood_energy_hist.png", "ood.config.yaml"):
        assert (tmp_path / "out" / name).is_file(), name
    payload = json.loads((tmp_path / "out" / "ood.json").read_text())
    assert "higher = more in-distribution" in payload["conventions"]["score"]

    # the row equals the protocol done by hand: probe on ID train features, energy of its logits
    spec = {"name": "fashion_mnist", "classes": [0, 1, 2, 3, 4, 5], "max_per_class": 10, "image_size": 16}
    get = lambda split, **kw: get_features(tiny_ckpts["ours"], {**spec, "split": split, **kw}, ["projector"],
                                           cache_dir=tmp_path / "cache", show_progress=False)
    train, test = get("train"), get("test")
    near = get("test", classes=[6, 7, 8, 9])
    result = train_probe(train["projector"], train.labels, 6, epochs=2, seed=0)
    energy = lambda x: torch.logsumexp(probe_logits(result, x).double(), 1).numpy()
    expected = detection_metrics(energy(test["projector"]), energy(near["projector"]))
    row = next(r for r in rows if r["model"] == "ours" and r["layer"] == "projector" and r["ood"] == "near")
    for k, v in expected.items():
        assert row[k] == pytest.approx(v, abs=1e-9), k


def test_any_scorer_at_any_layer_and_model_logits(tmp_path, tiny_ckpts):
    rows = eval_ood.main(["--ckpt", str(tiny_ckpts["ours"]), "--ood", "textures", "--layers", "layer3", "projector",
                          "--scorers", "gmm", "knn", "msp", "--no-histograms",
                          "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path), *COMMON])
    assert {(r["layer"], r["scorer"]) for r in rows} == {(l, s) for l in ("layer3", "projector") for s in ("gmm", "knn", "msp")}
    assert all(np.isfinite(r["auroc"]) for r in rows)
    rows = eval_ood.main(["--ckpt", str(tiny_ckpts["ours"]), "--ood", "textures", "--layers", "projector",
                          "--logits", "model", "--no-histograms",
                          "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path), *COMMON])
    assert len(rows) == 2


def test_unknown_scorer_exits_with_one_line(tmp_path, tiny_ckpts, capsys):
    with pytest.raises(SystemExit) as info:
        eval_ood.main(["--ckpt", str(tiny_ckpts["base"]), "--scorers", "odin", "--cache_dir", str(tmp_path),
                       "--out_dir", str(tmp_path), *COMMON])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "unknown OOD scorer 'odin'" in err[0] and "valid names: msp" in err[0]


def test_ood_splits_choose_the_split_an_ood_set_is_scored_on(tmp_path, tiny_ckpts, capsys):
    common = ["--ckpt", str(tiny_ckpts["base"]), "--ood", "near=fashion_mnist:classes=6-9", "--layers", "encoder",
              "--no-histograms", "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path), *COMMON]
    rows = eval_ood.main([*common, "--ood_splits", "near=train"])
    spec = {"name": "fashion_mnist", "max_per_class": 10, "image_size": 16}
    get = lambda split, classes: get_features(tiny_ckpts["base"], {**spec, "split": split, "classes": classes},
                                              ["encoder"], cache_dir=tmp_path / "cache", show_progress=False)
    train, test, near = get("train", list(range(6))), get("test", list(range(6))), get("train", [6, 7, 8, 9])
    result = train_probe(train["encoder"], train.labels, 6, epochs=2, seed=0)
    energy = lambda x: torch.logsumexp(probe_logits(result, x).double(), 1).numpy()
    expected = detection_metrics(energy(test["encoder"]), energy(near["encoder"]))
    for k, v in expected.items():
        assert rows[0][k] == pytest.approx(v, abs=1e-9), k
    capsys.readouterr()
    for extra, message in ((["--ood_splits", "far=val"], "--ood_splits names 'far', which is no --ood label (near)"),
                           (["--ood_splits", "near=val"], "OOD set near: fashion_mnist has no val split")):
        with pytest.raises(SystemExit):
            eval_ood.main([*common, *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
