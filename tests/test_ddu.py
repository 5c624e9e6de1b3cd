"""The DDU recipe and its L2-normalized variant (Haas, Yolland & Rabus, TMLR 2022) on the shared
machinery: recipe flags, the held-out validation split, the NC-loss intervention with the per-epoch
monitor, the named layers head_input and classifier in eval_ood, the seeds table and the scripts."""
import json
import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import eval_ood
import pretrain
import summarize
from core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from core.config import parse_config
from core.errors import UserError
from evaluate.runs import open_runs, resolve_layers
from features import get_features
from train.monitor import cap_per_class, false_positives
from evaluate.ood import OOD_DEFAULTS, OOD_TYPES
from train.options import PRETRAIN_ALIASES, PRETRAIN_DEFAULTS, PRETRAIN_TYPES
from train.recipes import build_optimizer, build_scheduler, check_recipe
from train.run import build_monitor, build_pretrain_data
from models import build_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ["--config", str(ROOT / "configs" / "ddu_embedded.yaml")]
SMALL = ["--max_per_class", "40", "--device", "cpu"]
pytestmark = pytest.mark.usefixtures("one_thread")


def config(*argv):
    return parse_config(PRETRAIN_DEFAULTS, [*CONFIG, *argv], types=PRETRAIN_TYPES, aliases=PRETRAIN_ALIASES)


def log_records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# --------------------------------------------------------------------------- false positives

def test_false_positives_is_the_number_of_ood_samples_among_the_top_n_id_scores():
    # pooled, descending: 0.9 id, 0.85 ood, 0.8 id, 0.75 ood | 0.7 id, 0.2 id, 0.1 ood -> 2 in the top 4
    assert false_positives([0.9, 0.8, 0.7, 0.2], [0.85, 0.75, 0.1]) == 2
    assert false_positives([5.0, 4.0], [1.0, 2.0, 3.0]) == 0
    assert false_positives([1.0, 2.0], [3.0, 4.0, 5.0]) == 2
    assert false_positives([1.0, 0.5], [0.5, 0.1]) == 1  # a tie at the cut counts against the detector
    rng = np.random.default_rng(0)
    for _ in range(20):  # a direct count on continuous (tie-free) scores
        id_scores, ood_scores = rng.normal(1, 1, 50), rng.normal(0, 1, 30)
        pooled = sorted([(s, False) for s in id_scores] + [(s, True) for s in ood_scores], reverse=True)
        assert false_positives(id_scores, ood_scores) == sum(is_ood for _, is_ood in pooled[:50])


def test_cap_per_class_keeps_at_most_k_of_each_label():
    targets = np.array([0] * 10 + [1] * 3 + [2] * 7)
    kept = cap_per_class(targets, 4, seed=0)
    assert np.bincount(targets[kept]).tolist() == [4, 3, 4] and np.all(np.diff(kept) > 0)
    assert np.array_equal(kept, cap_per_class(targets, 4, seed=0))
    assert np.array_equal(cap_per_class(targets, None), np.arange(20))


# --------------------------------------------------------------------------- recipe flags

def test_sgd_and_step_schedule_give_the_ddu_learning_rates():
    cfg = config("--lr", "0.1", "--epochs", "6", "--milestones", "2", "4")
    check_recipe(cfg)
    optimizer = build_optimizer(torch.nn.Linear(3, 2), cfg)
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, False, 5e-4)
    scheduler = build_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(cfg.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_defaults_keep_adamw_and_warmup_cosine():
    cfg = parse_config(PRETRAIN_DEFAULTS, ["--epochs", "4", "--warmup_epochs", "1"], types=PRETRAIN_TYPES)
    check_recipe(cfg)
    assert (cfg.optimizer, cfg.schedule, cfg.loss, cfg.val_split, cfg.monitor_ood) == ("adamw", "cosine", "ce", 0.0, [])
    optimizer = build_optimizer(torch.nn.Linear(3, 2), cfg)
    assert type(optimizer) is torch.optim.AdamW and optimizer.param_groups[0]["weight_decay"] == 0.05
    scheduler = build_scheduler(optimizer, cfg)
    assert type(scheduler).__name__ == "SequentialLR"


@pytest.mark.parametrize("argv, match", [
    (["--warmup_epochs", "1"], "no warmup"),
    (["--milestones", "2"], "increasing epochs in 1..1"),
    (["--milestones", "1", "1", "--epochs", "4"], "increasing"),
    (["--schedule", "cosine"], "applies to --schedule step only"),
    (["--loss", "nc", "--alpha", "0.05"], "--alpha"),
    (["--optimizer", "lbfgs"], "--optimizer must be one of"),
    (["--val_split", "1.0"], "--val_split"),
])
def test_recipe_mistakes_are_clear_errors(argv, match):
    with pytest.raises(UserError, match=match):
        check_recipe(config(*argv))


def test_val_split_holds_out_a_disjoint_stratified_part_of_the_training_set():
    cfg = config("--max_per_class", "50", "--val_split", "0.2")
    train, val = build_pretrain_data(cfg)
    train_idx, val_idx = set(train.indices), set(val.indices)
    assert not train_idx & val_idx and len(train_idx | val_idx) == 300
    assert train.dataset.split == val.dataset.split == "train"
    assert np.bincount(val.dataset.targets[val.indices].numpy()).tolist() == [10] * 6
    assert "RandomCrop" in repr(train.dataset.transform) and "RandomCrop" not in repr(val.dataset.transform)
    again, _ = build_pretrain_data(cfg)
    other, _ = build_pretrain_data(config("--max_per_class", "50", "--val_split", "0.2", "--seed", "1"))
    assert again.indices == train.indices and other.indices != train.indices


# --------------------------------------------------------------------------- end to end

def test_embedded_recipe_then_nc_intervention_with_the_monitor(tmp_path, capsys):
    summary = pretrain.main([*CONFIG, *SMALL, "--save_dir", str(tmp_path)])
    base = load_checkpoint(tmp_path / "model.pth")
    kwargs = base["model_kwargs"]
    assert kwargs["nc_control"]["l2_features"] and (kwargs["spectral_norm"], kwargs["activation"], kwargs["shortcut"]) \
        == (3.0, "leaky_relu", "avgpool")
    records = log_records(tmp_path / "model.log.jsonl")
    assert [r["lr"] for r in records] == pytest.approx([0.05, 0.005])
    assert "216 train / 24 held-out images" in capsys.readouterr().out
    assert 0 <= summary["best_acc1"] <= 1

    monitor = ["--monitor_ood", "near=fashion_mnist:classes=6-9,max_per_class=15", "digits:max_per_class=10",
               "--monitor_max_per_class", "15"]
    nc_args = [*CONFIG, *SMALL, "--save_dir", str(tmp_path), "--ckpt_file", "nc.pth", "--init_from",
               str(tmp_path / "model.pth"), "--loss", "nc", "--epochs", "1", "--milestones", "--lr", "0.01", *monitor]
    pretrain.main(nc_args)
    (record,) = log_records(tmp_path / "nc.log.jsonl")
    assert record["epoch"] == 1 and record["lr"] == 0.01 and record["ent_loss"] == 0.0
    assert record["loss"] > 0 and record["ce_loss"] > 0
    assert record["n_id_test"] == 240
    for label, n_ood in (("near", 60), ("digits", 100)):
        assert 0.0 <= record[f"auroc_{label}"] <= 1.0
        assert isinstance(record[f"false_positives_{label}"], int) and 0 <= record[f"false_positives_{label}"] <= n_ood
    for key in ("nc1", "nc2_equinorm", "nc2_equiangle", "nc3", "w_equinorm", "nc4"):
        assert np.isfinite(record[key]), key

    # the record is what the monitor measures on the saved model; the intervention changed the weights
    cfg = config(*nc_args[2:])
    saved = model_from_checkpoint(tmp_path / "nc.pth")
    remeasured = build_monitor(cfg, SimpleNamespace(device=torch.device("cpu")), saved)(saved)
    for key in ("nc1", "nc3", "nc4", "auroc_near", "false_positives_near", "auroc_digits", "false_positives_digits"):
        assert remeasured[key] == pytest.approx(record[key], rel=1e-6), key
    after = load_checkpoint(tmp_path / "nc.pth")["state_dict"]
    assert not torch.equal(after["classifier.weight"], base["state_dict"]["classifier.weight"])
    assert torch.equal(after["classifier.bias"], base["state_dict"]["classifier.bias"])  # the NC loss has no bias term

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # init_from a different architecture
        pretrain.main([*nc_args, "--no-l2_features", "--ckpt_file", "other.pth"])
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "it/s" not in line]
    assert len(err) == 1 and err[0].startswith("error:") and "holds a different model" in err[0]
    assert "nc_control" in err[0] and not (tmp_path / "other.pth").exists()


# --------------------------------------------------------------------------- layers

@pytest.fixture(scope="module")
def l2_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("resnet18", 6, nc_control={"l2_features": True}, stem="cifar", width=0.125, img_size=16)
    return save_checkpoint(tmp_path_factory.mktemp("l2") / "l2.pth", model=model, epoch=1, config={})


def test_head_input_is_the_normalized_embedding_the_classifier_reads():
    torch.manual_seed(0)
    plain = build_model("resnet18", 6, stem="cifar", width=0.125, img_size=16)
    model = build_model("resnet18", 6, nc_control={"l2_features": True}, stem="cifar", width=0.125, img_size=16).eval()
    assert "head_input" not in plain.named_layers() and plain.head_layer == "encoder"
    assert list(model.named_layers())[-3:] == ["encoder", "head_input", "classifier"] and model.head_layer == "head_input"
    seen = {}
    model.head_input.register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        out = model(torch.randn(4, 3, 16, 16), return_all=True)
    torch.testing.assert_close(seen["out"], model.classifier_input(out))
    torch.testing.assert_close(seen["out"].norm(dim=1), torch.ones(4))
    torch.testing.assert_close(out[2], model.classifier(seen["out"]))


def test_eval_ood_takes_the_logits_layer_only_when_named(tmp_path, l2_ckpt):
    common = ["--ckpt", str(l2_ckpt), "--names", "l2", "--ood", "digits", "--max_per_class", "10", "--image_size", "16",
              "--device", "cpu", "--no-histograms", "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path),
              "--logits", "model"]
    rows = eval_ood.main([*common, "--layers", "head_input", "classifier", "--scorers", "gmm"])
    assert [(r["layer"], r["ood"]) for r in rows] == [(layer, o) for layer in ("head_input", "classifier")
                                                      for o in ("digits", "average")]
    assert rows[0]["id_acc"] is not None and rows[2]["id_acc"] is None  # the model's W reads head_input
    rows = eval_ood.main([*common, "--layers", "head_input", "--scorers", "msp"])
    assert np.isfinite(rows[0]["auroc"])
    cfg = parse_config(OOD_DEFAULTS, ["--ckpt", str(l2_ckpt)], types=OOD_TYPES)
    (run,) = open_runs(cfg)
    assert "classifier" not in resolve_layers(cfg, run) and run.head_layer == "head_input"
    # the cached 'classifier' features are the logits of the cached head_input features
    spec = {"name": "fashion_mnist", "split": "test", "classes": list(range(6)), "max_per_class": 10, "image_size": 16}
    fs = get_features(l2_ckpt, spec, ["head_input", "classifier"], cache_dir=tmp_path / "cache", show_progress=False)
    weight, bias = run.head()
    torch.testing.assert_close(fs["classifier"], fs["head_input"] @ weight.T + bias, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- seeds table

def write_ood(path, rows):
    path.write_text(json.dumps({"rows": [{"model": m, "layer": l, "scorer": s, "ood": o, "auroc": a, "fpr95": 0.5}
                                         for m, l, s, o, a in rows]}))
    return str(path)


def test_ood_seeds_table_gives_min_max_mean_per_key(tmp_path):
    files = [write_ood(tmp_path / "s0.json", [("l2", "head_input", "gmm", "svhn", 0.90), ("l2", "head_input", "gmm", "cifar100", 0.80)]),
             write_ood(tmp_path / "s1.json", [("l2", "head_input", "gmm", "svhn", 0.96), ("l2", "head_input", "gmm", "cifar100", 0.86)]),
             write_ood(tmp_path / "s2.json", [("l2", "head_input", "gmm", "svhn", 0.93)]),
             write_ood(tmp_path / "s2_logits.json", [("l2", "classifier", "gmm", "svhn", 0.70)])]
    rows = summarize.main(["--ood_seeds", *files, "--out_dir", str(tmp_path / "out")])
    assert [(r["layer"], r["ood"], r["n_seeds"]) for r in rows] == [("head_input", "svhn", 3), ("head_input", "cifar100", 2),
                                                                     ("classifier", "svhn", 1)]
    assert (rows[0]["auroc_min"], rows[0]["auroc_max"]) == (0.90, 0.96)
    assert rows[0]["auroc_mean"] == pytest.approx(0.93) and rows[1]["auroc_mean"] == pytest.approx(0.83)
    written = json.loads((tmp_path / "out" / "ood_seeds.json").read_text())
    assert written["rows"] == rows and (tmp_path / "out" / "ood_seeds.md").is_file()
    fpr = summarize.main(["--ood_seeds", *files[:2], "--metric", "fpr95", "--out_dir", str(tmp_path / "fpr")])
    assert fpr[0]["fpr95_max"] == 0.5

    twice = write_ood(tmp_path / "twice.json", [("l2", "head_input", "gmm", "svhn", 0.9)] * 2)
    for argv, match in ((["--ood_seeds", files[0], files[0]], "more than once"),
                        (["--ood_seeds", twice], "two rows"),
                        (["--ood_seeds", str(tmp_path / "none.json")], "is missing")):
        with pytest.raises(SystemExit):
            summarize.main([*argv, "--out_dir", str(tmp_path / "err")])


# --------------------------------------------------------------------------- scripts

def test_scripts_dry_run_print_commands_their_entry_points_accept(tmp_path):
    env = dict(os.environ, DRY_RUN="1", SEEDS="0 1")
    commands = []
    for script in ("ddu_l2_pretrain.sh", "ddu_l2_eval.sh", "ddu_l2_intervention.sh"):
        result = subprocess.run(["bash", str(ROOT / "scripts" / script)], env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        commands += [shlex.split(line) for line in result.stdout.splitlines()]
    entries = [Path(next(a for a in cmd if a.endswith(".py"))).name for cmd in commands]
    assert entries == ["pretrain.py"] * 4 + ["eval_ood.py"] * 10 + ["summarize.py"] + ["pretrain.py"] * 2
    argv = lambda cmd: cmd[[i for i, a in enumerate(cmd) if a.endswith(".py")][0] + 1:]
    pretrained = []
    for cmd, entry in zip(commands, entries):
        if entry == "pretrain.py":
            cfg = parse_config(PRETRAIN_DEFAULTS, argv(cmd), types=PRETRAIN_TYPES, aliases=PRETRAIN_ALIASES)
            check_recipe(cfg)
            pretrained.append((cfg.l2_features, cfg.epochs, cfg.loss, cfg.init_from is not None, len(cfg.monitor_ood)))
        elif entry == "eval_ood.py":
            cfg = parse_config(OOD_DEFAULTS, argv(cmd), types=OOD_TYPES)
            assert len(cfg.ood) == 3 and cfg.logits == "model"
    assert pretrained == [(False, 350, "ce", False, 0), (True, 60, "ce", False, 0)] * 2 + \
                         [(True, 10, "nc", True, 3), (True, 10, "ce", True, 3)]
    assert len(argv(commands[14])) == 1 + 10 + 2  # summarize: --ood_seeds, 5 files per seed x 2 seeds, --out_dir DIR
