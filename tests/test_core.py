"""Configuration, atomic writes, result tables and checkpoint loading errors."""
import json
import random

import numpy as np
import pytest
import torch

from core.checkpoint import load_checkpoint, rng_state, set_rng_state
from core.config import ConfigError, parse_config, save_config
from core.errors import UserError
from core.io import atomic_torch_save, atomic_write_text
from core.tables import markdown_table, write_results

DEFAULTS = dict(lr=0.01, epochs=3, name="run", augmentation=True, classes=None, data=None, batch_size=8)
TYPES = {"classes": list[int], "data": str}


def test_config_layers_defaults_yaml_and_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 0.5\nclasses: [0, 1, 2]\naugmentation: false\n")
    cfg = parse_config(DEFAULTS, ["--config", str(cfg_file), "--epochs", "7", "-b", "32"], types=TYPES,
                       aliases={"batch_size": ["-b"]})
    assert cfg.lr == 0.5 and cfg.classes == [0, 1, 2] and cfg.augmentation is False
    assert cfg.epochs == 7 and cfg.batch_size == 32 and cfg.data is None
    cfg = parse_config(DEFAULTS, ["--config", str(cfg_file), "--augmentation", "--classes", "4", "5", "--lr", "1e-3"],
                       types=TYPES)
    assert cfg.augmentation is True and cfg.classes == [4, 5] and cfg.lr == pytest.approx(1e-3)


def test_config_rejects_unknown_yaml_key_and_bad_yaml(tmp_path):
    bad_key = tmp_path / "k.yaml"
    bad_key.write_text("learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        parse_config(DEFAULTS, ["--config", str(bad_key)], types=TYPES)
    bad_yaml = tmp_path / "y.yaml"
    bad_yaml.write_text("lr: [0.1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config(DEFAULTS, ["--config", str(bad_yaml)], types=TYPES)
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(DEFAULTS, ["--config", str(tmp_path / "missing.yaml")], types=TYPES)


def test_saved_config_reloads_to_the_same_values(tmp_path):
    cfg = parse_config(DEFAULTS, ["--classes", "1", "3", "--no-augmentation"], types=TYPES)
    save_config(cfg, tmp_path / "resolved.yaml")
    again = parse_config(DEFAULTS, ["--config", str(tmp_path / "resolved.yaml")], types=TYPES)
    assert vars(again) | {"config": []} == vars(cfg) | {"config": []}


def test_write_results_json_csv_md(tmp_path):
    rows = [{"model": "base", "nc1": 0.5, "fpr95": 0.25}, {"model": "ours", "nc1": 1.25, "fpr95": 0.125}]
    paths = write_results(rows, tmp_path, "table", extra={"seed": 0})
    payload = json.loads(paths["json"].read_text())
    assert payload["rows"] == rows and payload["seed"] == 0
    assert paths["csv"].read_text().splitlines() == ["model,nc1,fpr95", "base,0.5,0.25", "ours,1.25,0.125"]
    md = paths["md"].read_text()
    assert md.startswith("| model | nc1 | fpr95 |") and "| ours | 1.2500 | 0.1250 |" in md
    assert markdown_table(rows, ["model"]).count("|") == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv", "table.json", "table.md"]


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(tmp_path):
    target = tmp_path / "ckpt.pth"
    atomic_write_text(target, "old")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"x": Boom()}, target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_load_checkpoint_errors_are_one_clear_line(tmp_path):
    with pytest.raises(UserError, match=r"missing\.pth does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(UserError, match="is corrupt or not an nc-ood checkpoint") as info:
        load_checkpoint(garbage)
    assert "\n" not in str(info.value)
    real = tmp_path / "real.pth"
    torch.save({"format": 1, "model_kwargs": {}, "state_dict": {"w": torch.ones(1000)}, "epoch": 1}, real)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    with pytest.raises(UserError, match="is corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pth"
    torch.save({"weights": torch.ones(3)}, foreign)
    with pytest.raises(UserError, match="not an nc-ood checkpoint"):
        load_checkpoint(foreign)
    assert load_checkpoint(real)["epoch"] == 1


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    atomic_torch_save({"rng": rng_state()}, tmp_path / "rng.pth")
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_a_config_file_starts_from_its_base_and_overrides_it(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "root.yaml").write_text("lr: 0.5\nepochs: 9\nname: root\n")
    (tmp_path / "shared" / "mid.yaml").write_text("base: root.yaml\nepochs: 4\n")
    (tmp_path / "leaf.yaml").write_text("base: shared/mid.yaml\nname: leaf\n")
    cfg = parse_config(DEFAULTS, ["--config", str(tmp_path / "leaf.yaml"), "--lr", "0.25"], types=TYPES)
    assert (cfg.lr, cfg.epochs, cfg.name) == (0.25, 4, "leaf")  # flag < leaf < mid < root


def test_a_base_that_is_missing_unknown_or_circular_is_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"a.yaml has base: nowhere.yaml, but .*nowhere.yaml does not exist"):
        parse_config(DEFAULTS, ["--config", str(tmp_path / "a.yaml")])
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        parse_config(DEFAULTS, ["--config", str(tmp_path / "b.yaml")])
    (tmp_path / "d.yaml").write_text("base: c.yaml\nlearning_rate: 1\n")
    (tmp_path / "c.yaml").write_text("epochs: 2\n")
    with pytest.raises(ConfigError, match=r"d.yaml sets unknown key 'learning_rate'"):
        parse_config(DEFAULTS, ["--config", str(tmp_path / "d.yaml")])


def test_print_config_prints_the_resolved_values_and_exits(tmp_path, capsys):
    import yaml

    (tmp_path / "c.yaml").write_text("lr: 0.5\n")
    with pytest.raises(SystemExit) as stop:
        parse_config(DEFAULTS, ["--config", str(tmp_path / "c.yaml"), "--epochs", "7", "--print_config"], types=TYPES)
    assert stop.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out) == {**DEFAULTS, "lr": 0.5, "epochs": 7}
    assert not hasattr(parse_config(DEFAULTS, []), "print_config")  # never part of a saved configuration


def test_a_progress_bar_does_not_start_iterating_what_it_wraps():
    from core.progress import progress

    class Counting:
        iterators = 0

        def __len__(self):
            return 3

        def __iter__(self):
            Counting.iterators += 1
            return iter(range(3))

    items = Counting()
    bar = progress(items, show=False)
    assert Counting.iterators == 0  # a DataLoader with workers would start them here
    assert list(bar) == [0, 1, 2] and Counting.iterators == 1
