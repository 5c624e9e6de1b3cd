"""train_lp.py end to end on the embedded downstream sets with two tiny untrained checkpoints
(a baseline and an NC-controlled one): rows, averages, the ID columns (ID top-1, log-odds gain,
VCI / NC1 / CDNV), files, the feature cache, user errors; and the pure table logic of evaluate.transfer."""
import json
import math
from argparse import Namespace

import pytest
import torch
import yaml
from PIL import Image

import core.checkpoint
import evaluate.runs
import train_lp
from data import build_dataset
from core.checkpoint import save_checkpoint
from evaluate.runs import layer_nc_metrics as layer_metrics
from evaluate.probe import ProbeResult
from evaluate.transfer import (AVERAGE, COLLAPSE_KEYS, TRANSFER_DEFAULTS, average_rows, depth_series, id_accuracy,
                             id_columns, log_odds_gain, logit, parse_test_splits)
from models import build_model

BASE_LAYERS = ["layer1", "layer2", "layer3", "last_conv", "layer4", "encoder"]
NC_LAYERS = BASE_LAYERS + ["projector_raw", "projector"]
DIMS = {"layer1": 8, "layer2": 16, "layer3": 32, "last_conv": 64, "layer4": 64, "encoder": 64, "projector_raw": 64,
        "projector": 64}
SETS = {"heldout": 4, "animal_mnist": 10, "digits": 10}  # label -> classes (10 images each per split)


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_ckpts):
    """A folder for the cache and results, holding the shared tiny checkpoints (tests/conftest.py)."""
    root = tmp_path_factory.mktemp("lp")
    for name, path in tiny_ckpts.items():
        (root / f"{name}.pth").symlink_to(path)
    return root


def lp_args(work, *extra):
    return ["--ckpt", str(work / "base.pth"), str(work / "ours.pth"), "--names", "baseline", "ours",
            "--max_per_class", "10", "--image_size", "16", "--probe_epochs", "3", "--device", "cpu",
            "--cache_dir", str(work / "cache"), "--out_dir", str(work / "out"), *extra]


@pytest.fixture(scope="module")
def first_run(work):
    return train_lp.main(lp_args(work))


def test_rows_cover_every_model_dataset_and_layer(first_run):
    per_set = [r for r in first_run if r["dataset"] != AVERAGE]
    got = {(r["model"], r["dataset"], r["layer"]) for r in per_set}
    want = {("baseline", d, layer) for d in SETS for layer in BASE_LAYERS}
    want |= {("ours", d, layer) for d in SETS for layer in NC_LAYERS}
    assert got == want and len(per_set) == len(want)
    for row in per_set:
        assert 0.0 <= row["final_acc"] <= row["best_acc"] <= 1.0
        assert row["n_train"] == row["n_test"] == 10 * SETS[row["dataset"]]
        assert row["dim"] == DIMS[row["layer"]]
        assert row["depth"] == NC_LAYERS.index(row["layer"])
    assert not any(r["layer"] == "projector" for r in first_run if r["model"] == "baseline")


def test_average_rows_are_the_mean_over_the_datasets(first_run):
    averages = [r for r in first_run if r["dataset"] == AVERAGE]
    assert {(r["model"], r["layer"]) for r in averages} == \
        {("baseline", layer) for layer in BASE_LAYERS} | {("ours", layer) for layer in NC_LAYERS}
    for avg in averages:
        group = [r for r in first_run
                 if r["dataset"] != AVERAGE and (r["model"], r["layer"]) == (avg["model"], avg["layer"])]
        assert len(group) == len(SETS)
        for key in ("best_acc", "final_acc"):
            assert avg[key] == pytest.approx(sum(r[key] for r in group) / len(group), abs=1e-12)


def test_results_config_and_figure_are_written(work, first_run):
    out = work / "out"
    payload = json.loads((out / "linear_probe.json").read_text())
    assert payload["rows"] == first_run
    assert payload["config"]["out_name"] == "linear_probe" and payload["config"]["probe_epochs"] == 3
    csv_lines = (out / "linear_probe.csv").read_text().splitlines()
    assert csv_lines[0] == ("model,dataset,layer,depth,dim,best_acc,final_acc,n_train,n_test,"
                            "id_acc,id_acc_from,log_odds_gain,nc1,nc1_cdnv,vci")
    assert len(csv_lines) == 1 + len(first_run)
    assert (out / "linear_probe.md").read_text().startswith("| model | dataset | layer |")
    config = yaml.safe_load((out / "linear_probe.config.yaml").read_text())
    assert config["transfer"] == ["heldout=fashion_mnist:classes=6-9", "animal_mnist", "digits"]
    assert config["names"] == ["baseline", "ours"]
    png = (out / "linear_probe.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_second_run_reads_the_cache_and_gives_the_same_rows(work, first_run, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was rebuilt: the features were not read from the cache")

    monkeypatch.setattr(core.checkpoint, "model_from_checkpoint", no_model)
    again = train_lp.main(lp_args(work, "--out_name", "again"))
    assert again == first_run
    assert (work / "out" / "again.json").is_file()


def test_rows_take_best_and_final_accuracy_from_the_probe(work, first_run, monkeypatch):
    calls = []

    def fake_probe(train_x, train_y, num_classes, **kwargs):
        calls.append((train_x.shape, num_classes, kwargs))
        return ProbeResult(torch.zeros(num_classes, train_x.shape[1]), torch.zeros(num_classes), 0.25, 0.75)

    monkeypatch.setattr(core.checkpoint, "model_from_checkpoint", None)  # cached: the model is not needed
    monkeypatch.setattr(evaluate.runs, "train_probe", fake_probe)
    rows = train_lp.main(lp_args(work, "--transfer", "digits", "--layers", "layer2", "--probe_solver", "lbfgs",
                                 "--out_name", "fake"))
    assert [(r["model"], r["dataset"], r["best_acc"], r["final_acc"]) for r in rows] == [
        ("baseline", "digits", 0.75, 0.25), ("baseline", AVERAGE, 0.75, 0.25),
        ("ours", "digits", 0.75, 0.25), ("ours", AVERAGE, 0.75, 0.25)]
    for row in rows:  # the gain of the best accuracy, 0.75
        assert row["log_odds_gain"] == pytest.approx(math.log(3.0) - logit(row["id_acc"]), abs=1e-12)
    assert [(shape, n) for shape, n, _ in calls] == [((100, 16), 10)] * 2
    assert all(kw["solver"] == "lbfgs" and kw["test_x"].shape == (100, 16) and kw["epochs"] == 3 for *_, kw in calls)


@pytest.mark.parametrize("extra, message", [
    (["--layers", "encoder", "nope"], "unknown layer 'nope'"),
    (["--ckpt", "/nonexistent/model.pth", "--names", "x"], "does not exist"),
    (["--names", "a", "a"], "several checkpoints are named a"),
    (["--transfer", "digits", "digits"], "more than once"),
    (["--test_splits", "digits=val"], "digits: unknown split 'val'"),
    (["--test_splits", "cifar=val"], "no --transfer label"),
    (["--dataset", "digits"], "class-count mismatch: "),
])
def test_user_errors_exit_2_with_one_line(work, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        train_lp.main(lp_args(work, "--out_name", "error", *extra))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err
    assert not (work / "out" / "error.json").exists()


def test_splits_with_different_classes_fail_before_any_extraction(work, tmp_path, capsys, monkeypatch):
    for split, classes in [("train", ["cat", "dog"]), ("test", ["cat", "owl"])]:
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8), (40, 80, 120)).save(tmp_path / split / name / "a.png")
    monkeypatch.setattr(core.checkpoint, "model_from_checkpoint", None)  # nothing may be extracted
    with pytest.raises(SystemExit) as exit_info:
        train_lp.main(lp_args(work, "--transfer", f"pics=imagefolder:root={tmp_path}", "--out_name", "error"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()  # the test split numbers its classes as the train split does
    assert err == (f"error: imagefolder: {tmp_path / 'test'} has class folder(s) owl that {tmp_path / 'train'} lacks; "
                   "every split must use the training split's classes (add them there or remove them)")


def _row(model, dataset, layer, depth, best, final):
    return {"model": model, "dataset": dataset, "layer": layer, "depth": depth, "dim": 4,
            "best_acc": best, "final_acc": final, "n_train": 8, "n_test": 8}


def test_average_rows_group_by_model_and_layer():
    rows = [_row("a", "x", "l1", 0, 0.5, 0.25), _row("a", "y", "l1", 0, 1.0, 0.75), _row("a", "x", "l2", 1, 0.2, 0.2),
            _row("b", "x", "l1", 0, 0.1, 0.1)]
    averages = average_rows(rows + [_row("a", AVERAGE, "l1", 0, 9.0, 9.0)])  # existing averages are ignored
    assert [(r["model"], r["layer"]) for r in averages] == [("a", "l1"), ("a", "l2"), ("b", "l1")]
    assert averages[0]["best_acc"] == pytest.approx(0.75) and averages[0]["final_acc"] == pytest.approx(0.5)
    assert averages[1]["best_acc"] == pytest.approx(0.2) and averages[2]["best_acc"] == pytest.approx(0.1)
    assert all(r["dataset"] == AVERAGE and r["n_train"] is None for r in averages)


def test_depth_series_pivots_datasets_into_panels():
    rows = [_row("a", "x", "l2", 1, 0.4, 0.4), _row("a", "x", "l1", 0, 0.3, 0.3), _row("a", AVERAGE, "l1", 0, 0.3, 0.3),
            _row("a", "y", "l1", 0, 0.6, 0.5), _row("b", "y", "l1", 0, 0.9, 0.8)]
    series, panels = depth_series(rows, "final_acc")
    assert panels == ["x", "y", AVERAGE]
    assert series["a"] == [{"layer": "l1", "x": 0.3, AVERAGE: 0.3, "y": 0.5}, {"layer": "l2", "x": 0.4}]
    assert series["b"] == [{"layer": "l1", "y": 0.8}]


def test_parse_test_splits():
    assert parse_test_splits(["flowers = val"], ["flowers", "pets"]) == {"flowers": "val"}
    for bad in (["flowers"], ["flowers=train"], ["=val"]):
        with pytest.raises(Exception, match="test_splits"):
            parse_test_splits(bad, ["flowers"])


def test_logit_and_log_odds_gain_by_hand():
    assert logit(0.8) == pytest.approx(math.log(4.0), abs=1e-15)
    assert logit(0.5) == 0.0 and logit(0.2) == pytest.approx(-math.log(4.0), abs=1e-15)
    assert logit(0.0) == pytest.approx(math.log(1e-4 / (1 - 1e-4)), abs=1e-12)  # clipped, finite
    assert logit(1.0) == pytest.approx(-logit(0.0), abs=1e-9) and logit(1.0) == logit(1 - 1e-6)
    assert log_odds_gain(0.8, 0.5) == pytest.approx(math.log(4.0), abs=1e-15)
    assert log_odds_gain(0.6, 0.9) == pytest.approx(math.log(1.5) - math.log(9.0), abs=1e-15)


def test_average_rows_average_the_log_odds_gain_and_carry_the_id_columns():
    rows = [{**_row("a", "x", "l1", 0, 0.8, 0.7), **id_columns(0.8, (0.5, "history"))},
            {**_row("a", "y", "l1", 0, 0.6, 0.6), **id_columns(0.6, (0.5, "history"))},
            {**_row("b", "x", "l1", 0, 0.9, 0.9), **id_columns(0.9, None)}]
    assert rows[0]["log_odds_gain"] == pytest.approx(math.log(4.0))
    collapse = {("a", "l1"): {"vci": 0.25, "nc1": 2.0, "nc1_cdnv": 0.5}}
    a, b = average_rows(rows, collapse)
    assert a["log_odds_gain"] == pytest.approx((math.log(4.0) + math.log(1.5)) / 2, abs=1e-12)
    assert (a["id_acc"], a["id_acc_from"], a["vci"], a["nc1"], a["nc1_cdnv"]) == (0.5, "history", 0.25, 2.0, 0.5)
    assert b["log_odds_gain"] is None and b["id_acc"] is None
    assert all(b[key] is None for key in COLLAPSE_KEYS)  # no collapse statistics given for model b


def test_id_columns_of_the_end_to_end_rows(work, first_run):
    """Untrained checkpoints have no history: the ID top-1 is the head's on the ID test images
    (checked here against a forward pass of the model); VCI/NC1/CDNV match layer_metrics on the
    ID train features."""
    cfg = Namespace(**{**TRANSFER_DEFAULTS, "max_per_class": 10, "image_size": 16, "device": "cpu",
                       "cache_dir": str(work / "cache")})
    spec = evaluate.runs.id_spec(cfg)
    test_set = build_dataset(**spec.kwargs(image_size=16, max_per_class=10, seed=0), split="test")
    images = torch.stack([test_set[i][0] for i in range(len(test_set))])
    labels = torch.tensor([test_set[i][1] for i in range(len(test_set))])
    for run in evaluate.runs.open_runs(Namespace(ckpt=[str(work / "base.pth"), str(work / "ours.pth")],
                                                     names=["baseline", "ours"])):
        model = core.checkpoint.model_from_checkpoint(run.path)
        with torch.no_grad():
            want_acc = float((model(images).argmax(1) == labels).double().mean())
        rows = [r for r in first_run if r["model"] == run.name]
        assert all(r["id_acc"] == pytest.approx(want_acc, abs=1e-12) and r["id_acc_from"] == "head" for r in rows)
        train = evaluate.runs.features(cfg, run, spec, "train", [r["layer"] for r in rows])
        for row in (r for r in rows if r["dataset"] != AVERAGE):
            assert row["log_odds_gain"] == pytest.approx(logit(row["best_acc"]) - logit(want_acc), abs=1e-9)
            assert all(key not in row for key in COLLAPSE_KEYS)
        for row in (r for r in rows if r["dataset"] == AVERAGE):
            want = layer_metrics(train, row["layer"])
            assert 0.0 <= row["vci"] <= 1.0 and row["nc1"] > 0 and row["nc1_cdnv"] > 0
            assert all(row[key] == pytest.approx(want[key], rel=1e-12) for key in COLLAPSE_KEYS)


def test_id_accuracy_prefers_the_last_val_acc1_of_the_history(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", 6, stem="cifar", width=0.125, img_size=16)
    path = save_checkpoint(tmp_path / "trained.pth", model=model, epoch=2, config={},
                           extra={"history": [{"epoch": 1, "val_acc1": 0.3}, {"epoch": 2, "val_acc1": 0.42}]})
    cfg = Namespace(**{**TRANSFER_DEFAULTS, "cache_dir": str(tmp_path / "no_cache")})
    run, = evaluate.runs.open_runs(Namespace(ckpt=[str(path)], names=[]))
    assert id_accuracy(cfg, run, evaluate.runs.id_spec(cfg)) == (0.42, "history")
    assert not (tmp_path / "no_cache").exists()  # nothing was extracted


def test_no_id_metrics_leaves_the_id_columns_empty(work, first_run, monkeypatch):
    monkeypatch.setattr(core.checkpoint, "model_from_checkpoint", None)
    monkeypatch.setattr(evaluate.runs, "train_probe", lambda x, y, c, **kw: ProbeResult(
        torch.zeros(c, x.shape[1]), torch.zeros(c), 0.5, 0.5))
    rows = train_lp.main(lp_args(work, "--transfer", "digits", "--layers", "encoder", "--no-id_metrics",
                                 "--dataset", "digits", "--out_name", "no_id"))  # the ID dataset is not even read
    assert len(rows) == 4
    assert all(r["id_acc"] is None and r["log_odds_gain"] is None for r in rows)
    assert all(r[key] is None for r in rows if r["dataset"] == AVERAGE for key in COLLAPSE_KEYS)
