"""eval_ood.py with the detector zoo: scorer options from the command line, the classifier of every row,
a scorer that cannot work on a layer, NC5 per OOD set, OpenOOD's parameter search and per-sample scores."""
import gzip
import json

import numpy as np
import pytest
import torch

import eval_ood
import evaluate.ood as evaluate_ood
from features import get_features
from metrics.nc import nc5

COMMON = ["--max_per_class", "10", "--image_size", "16", "--probe_epochs", "2", "--device", "cpu", "--no-histograms"]
SPEC = {"name": "fashion_mnist", "max_per_class": 10, "image_size": 16}


def run(tmp_path, ckpt, *extra):
    return eval_ood.main(["--ckpt", str(ckpt), "--layers", "encoder", "--ood", "digits",
                          "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path / "out"), *COMMON, *extra])


def test_options_act_and_every_row_names_its_classifier(tmp_path, tiny_ckpts):
    rows = run(tmp_path, tiny_ckpts["base"], "--scorers", "react", "react:percentile=50", "knn:K=3", "gmm")
    by = {(r["scorer"], r["ood"]): r for r in rows}
    assert set(s for s, _ in by) == {"react", "react:percentile=50", "knn:K=3", "gmm"}
    assert by[("react", "digits")]["classifier"] == "probe" and by[("gmm", "digits")]["classifier"] == "none"
    assert by[("react:percentile=50", "digits")]["options"] == "percentile=50"
    assert by[("react", "digits")]["auroc"] != by[("react:percentile=50", "digits")]["auroc"]  # the option acts
    payload = json.loads((tmp_path / "out" / "ood.json").read_text())
    assert "classifier" in payload["conventions"]


def test_nc5_per_ood_set_equals_its_formula_on_the_cached_features(tmp_path, tiny_ckpts):
    rows = run(tmp_path, tiny_ckpts["ours"], "--ood", "digits", "textures")
    get = lambda split, **kw: get_features(tiny_ckpts["ours"], {**SPEC, "split": split, **kw}, ["encoder"],
                                           cache_dir=tmp_path / "cache", show_progress=False)
    train = get("train", classes=list(range(6)))
    x, y = train["encoder"].double(), train.labels
    means = torch.stack([x[y == c].mean(0) for c in range(6)])
    expected = {}
    for label in ("digits", "textures"):
        ood = get_features(tiny_ckpts["ours"], {"name": label, "max_per_class": 10, "image_size": 16, "split": "test"},
                           ["encoder"], cache_dir=tmp_path / "cache", show_progress=False)["encoder"].double().mean(0)
        cos = (means @ ood) / (means.norm(dim=1) * ood.norm())
        expected[label] = float(cos.abs().mean())
        assert next(r for r in rows if r["ood"] == label)["nc5"] == pytest.approx(expected[label], rel=1e-9)
        assert expected[label] == pytest.approx(nc5(means, ood), rel=1e-12)
    average = next(r for r in rows if r["ood"] == "average")
    assert average["nc5"] == pytest.approx(np.mean(list(expected.values())), rel=1e-9)


def test_a_scorer_that_cannot_work_on_a_layer_says_so_in_one_line(tmp_path, tiny_ckpts):
    with pytest.warns(UserWarning) as caught:
        rows = run(tmp_path, tiny_ckpts["base"], "--scorers", "energy", "vim:dim=1000")
    failed = [r for r in rows if r["scorer"] == "vim:dim=1000"]
    assert failed and all(r["auroc"] is None and r["note"] for r in failed)
    assert any("vim:dim=1000 cannot score layer encoder of base" in str(w.message) for w in caught)
    assert all(r["auroc"] is not None for r in rows if r["scorer"] == "energy")


def test_search_reads_no_test_ood_set_before_it_has_chosen(tmp_path, tiny_ckpts, monkeypatch):
    read = []
    real = evaluate_ood.features
    monkeypatch.setattr(evaluate_ood, "features", lambda cfg, run, spec, split, *a, **k:
                        read.append((spec.label, split)) or real(cfg, run, spec, split, *a, **k))
    real_search = evaluate_ood.search_layer

    def search(*args, **kwargs):
        assert ("digits", "test") not in read, "a test OOD set was read during the search"
        read.append(("search", ""))
        return real_search(*args, **kwargs)
    monkeypatch.setattr(evaluate_ood, "search_layer", search)
    rows = run(tmp_path, tiny_ckpts["base"], "--scorers", "react", "energy", "--search", "--val_ood",
               "val_textures=textures", "--val_fraction", "0.25")
    assert read.index(("search", "")) < read.index(("digits", "test"))
    assert ("val_textures", "train") in read  # the validation OOD set is scored on another split than the test sets
    searched = json.loads((tmp_path / "out" / "ood_search.json").read_text())["rows"]
    react = [r for r in searched if r["scorer"] == "react"]
    assert [r["options"] for r in react][0] == "percentile=90" and len(react) == 4  # default first, OpenOOD's grid
    assert sum(r["chosen"] for r in react) == 1
    assert {(r["scorer"], r["search"]) for r in rows} == {(s, k) for s in ("react", "energy") for k in ("chosen", "default")}
    chosen = next(r for r in react if r["chosen"])
    assert next(r for r in rows if r["scorer"] == "react" and r["search"] == "chosen")["options"] == chosen["options"]
    assert chosen["val_auroc"] == max(r["val_auroc"] for r in react)


def test_search_needs_validation_ood_data_that_is_not_a_test_set(tmp_path, tiny_ckpts, capsys):
    for extra, message in ((["--search"], "pass --val_ood"),
                           (["--search", "--val_ood", "digits", "--ood_splits", "digits=train"], "is a test OOD set too"),
                           (["--val_ood", "textures"], "add --search")):
        with pytest.raises(SystemExit):
            run(tmp_path, tiny_ckpts["base"], *extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_save_scores_writes_every_samples_score(tmp_path, tiny_ckpts):
    rows = run(tmp_path, tiny_ckpts["base"], "--scorers", "energy", "gen:gamma=0.5,M=3", "--save_scores")
    with gzip.open(tmp_path / "out" / "ood_scores.csv.gz", "rt") as f:
        table = np.genfromtxt(f, delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert set(table["scorer"]) == {"energy", "gen"} and set(table["options"]) == {"", "gamma=0.5;M=3"}
    assert set(table["set"]) == {"id", "digits"}
    energy_ood = table[(table["scorer"] == "energy") & (table["set"] == "digits")]
    assert list(energy_ood["index"]) == list(range(len(energy_ood)))
    energy_id = table[(table["scorer"] == "energy") & (table["set"] == "id")]["score"]
    from ood import detection_metrics
    auroc = detection_metrics(energy_id, energy_ood["score"])["auroc"]
    assert auroc == next(r for r in rows if r["scorer"] == "energy" and r["ood"] == "digits")["auroc"]
