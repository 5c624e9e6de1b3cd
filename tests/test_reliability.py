"""What a user can get wrong or a machine can break, and what nc-ood does about it: file
permissions, temporaries of killed processes, typed configuration values, run folders,
resumed runs, damaged feature caches, inconsistent datasets and checkpoints."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import core.io as io_
from core.io import atomic_torch_save, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
PYTHON_ENV = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", OMP_NUM_THREADS="1")


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


# --------------------------------------------------------------------------- files and temporaries

@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_honour_the_umask_like_a_plain_open(tmp_path, umask, mask, mode):
    umask(mask)
    text = atomic_write_text(tmp_path / "results.json", "{}")
    ckpt = atomic_torch_save({"x": 1}, tmp_path / "model.pth")
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == mode
    assert text.stat().st_mode & 0o777 == mode and ckpt.stat().st_mode & 0o777 == mode


def test_feature_cache_folders_honour_the_umask(tmp_path, umask, tiny_ckpts):
    from features import get_features

    umask(0o022)
    fs = get_features(tiny_ckpts["base"], dict(name="digits", split="test", max_per_class=2, image_size=16),
                      ["encoder"], cache_dir=tmp_path / "cache", device="cpu", show_progress=False)
    assert fs.path.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in fs.path.iterdir())


SLOW_WRITER = """
import sys, time
from core.io import _atomic
def write(tmp):
    with open(tmp, "w") as f:
        f.write("half a checkpoint")
    print("writing", flush=True)
    time.sleep(120)
_atomic(sys.argv[1], write)
"""


def start_slow_writer(target: Path) -> subprocess.Popen:
    """A process stuck half-way through an atomic write of ``target`` (its temporary exists)."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], cwd=ROOT, env=PYTHON_ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def hidden(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(".")}


def test_temporaries_of_killed_writers_are_removed_at_the_next_start_and_live_ones_kept(tmp_path):
    killed = start_slow_writer(tmp_path / "model.pth")
    left_behind = hidden(tmp_path)
    killed.kill()
    killed.wait()
    live = start_slow_writer(tmp_path / "best_model.pth")
    try:
        in_progress = hidden(tmp_path) - left_behind
        assert len(left_behind) == 1 and len(in_progress) == 1
        io_._TIDIED.clear()  # as in the next process: its first write into the folder tidies it
        atomic_write_text(tmp_path / "model.config.yaml", "x")
        assert hidden(tmp_path) == in_progress, "the dead writer's temporary goes, the live writer's stays"
        assert io_.remove_stale_temps(tmp_path) == [] and hidden(tmp_path) == in_progress
    finally:
        live.kill()
        live.wait()
    assert [p.name for p in io_.remove_stale_temps(tmp_path)] == list(in_progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.config.yaml"]


def test_unnamed_temporaries_of_older_versions_go_once_untouched_for_a_day(tmp_path):
    old_file = tmp_path / ".model.pth.k2j4_x9a.tmp"
    old_dir = tmp_path / ".tmp-0123456789abcdef-a1b2c3d4"
    fresh = tmp_path / ".best_model.pth.zz99yy88.tmp"
    for path in (old_file, fresh):
        path.write_text("partial")
    old_dir.mkdir()
    (old_dir / "encoder.npy").write_text("partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    for path in (old_file, old_dir / "encoder.npy", old_dir):
        os.utime(path, (two_days_ago, two_days_ago))
    unrelated = tmp_path / ".hidden_notes"
    unrelated.write_text("mine")
    os.utime(unrelated, (two_days_ago, two_days_ago))
    assert sorted(p.name for p in io_.remove_stale_temps(tmp_path)) == sorted([old_file.name, old_dir.name])
    assert hidden(tmp_path) == {fresh.name, unrelated.name}


# --------------------------------------------------------------------------- typed configuration values

DEFAULTS = dict(lr=0.01, epochs=3, name="run", augmentation=True, classes=None, data=None, milestones=[])
TYPES = {"classes": list[int], "data": str, "milestones": list[int]}


def from_yaml(tmp_path, text, *flags):
    from core.config import parse_config

    path = tmp_path / "c.yaml"
    path.write_text(text)
    return parse_config(DEFAULTS, ["--config", str(path), *flags], types=TYPES)


@pytest.mark.parametrize("text, key, value", [
    ('augmentation: "false"', "augmentation", False),   # a non-empty string used to be true
    ("augmentation: 'True'", "augmentation", True),
    ("augmentation: false", "augmentation", False),
    ("lr: 1e-3", "lr", 1e-3),                           # YAML reads 1e-3 as a string
    ("lr: 1", "lr", 1.0),
    ("epochs: '7'", "epochs", 7),
    ("name: 2024", "name", "2024"),
    ("classes: [0, '2', 5]", "classes", [0, 2, 5]),
    ("classes: null", "classes", None),
    ("data: None", "data", None),
    ("milestones: []", "milestones", []),
])
def test_yaml_values_are_converted_by_the_type_of_their_key(tmp_path, text, key, value):
    got = getattr(from_yaml(tmp_path, text), key)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text, message", [
    ("epochs: 1.5", "epochs must be an integer, got 1.5"),
    ("epochs: 2.0", "epochs must be an integer, got 2.0"),
    ("epochs: null", "epochs must be an integer, not null"),
    ("augmentation: 'maybe'", "augmentation must be true or false, got 'maybe'"),
    ("augmentation: 1", "augmentation must be true or false, got 1"),
    ("lr: .nan", "lr must be a finite number"),
    ("lr: fast", "lr must be a number, got 'fast'"),
    ("name: no", "name must be a string, got the YAML boolean false (quote it)"),
    ("classes: 3", "classes must be a list of integers"),
    ("classes: [0, 1.5]", "classes element 1 must be an integer, got 1.5"),
    ("milestones: [1, null]", "milestones element 1 must be an integer, not null"),
])
def test_wrong_yaml_values_are_one_line_errors_naming_file_and_key(tmp_path, text, message):
    from core.config import ConfigError

    with pytest.raises(ConfigError) as info:
        from_yaml(tmp_path, text)
    assert message in str(info.value) and "c.yaml" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "1.5"], "argument --epochs: must be an integer, got '1.5'"),
    (["--lr", "none"], "argument --lr: must be a number, got 'none'"),
    (["--classes", "0", "x"], "argument --classes: must be an integer, got 'x'"),
    (["--epochz", "3"], "unrecognized arguments: --epochz 3"),
    (["--lr"], "argument --lr: expected one argument"),
])
def test_wrong_flags_are_one_line_errors(tmp_path, flags, message):
    from core.config import ConfigError

    with pytest.raises(ConfigError) as info:
        from_yaml(tmp_path, "{}", *flags)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_yaml_typo_in_a_pretraining_config_is_one_line_and_writes_nothing(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 1.5\n")
    result = subprocess.run([sys.executable, str(ROOT / "pretrain.py"), "--config", str(config),
                             "--save_dir", str(tmp_path / "run")], cwd=ROOT, env=PYTHON_ENV, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: config file {config}: epochs must be an integer, got 1.5"]
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- pretraining runs

TINY = ["--dataset", "fashion_mnist", "--classes", "0", "1", "2", "3", "4", "5", "--num_classes", "6",
        "--image_size", "16", "--arch", "resnet18", "--stem", "cifar", "--width", "0.125", "-b", "32",
        "--workers", "0", "--lr", "0.003", "--warmup_epochs", "1", "--device", "cpu", "--max_per_class", "10"]


def pretrain_error(capsys, argv) -> str:
    """The one line a pretraining command that must fail prints (exit code 2)."""
    import pretrain

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        pretrain.main(argv)
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.strip() and not any(bar in line for bar in ("it/s", "s/it"))]  # progress bars
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def log_epochs(folder: Path, name: str = "model") -> list[dict]:
    import json

    return [json.loads(line) for line in (folder / f"{name}.log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A folder holding a finished 2-epoch run (model.pth, best_model.pth, log, config)."""
    import pretrain

    folder = tmp_path_factory.mktemp("finished") / "run"
    pretrain.main(TINY + ["--epochs", "2", "--save_dir", str(folder)])
    return folder


@pytest.fixture
def run_copy(finished_run, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    return folder


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--epochs", "-1"], "--epochs must be at least 1, got -1"),
    (["-b", "0"], "--batch_size (-b) must be at least 1, got 0"),
    (["--label_smoothing", "2"], "--label_smoothing must be in [0, 1), got 2.0"),
    (["--warmup_epochs", "-3"], "--warmup_epochs must be at least 0, got -3"),
    (["--device", "gpu"], "--device 'gpu' is not a device"),
])
def test_out_of_range_values_are_one_line_errors_that_touch_no_file(capsys, run_copy, flags, message):
    before = snapshot(run_copy)
    for resume in ([], ["--resume", str(run_copy / "model.pth")]):
        line = pretrain_error(capsys, TINY + ["--epochs", "2", "--save_dir", str(run_copy), *resume, *flags])
        assert message in line
    assert snapshot(run_copy) == before


def test_cuda_without_a_gpu_is_one_line(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = pretrain_error(capsys, TINY + ["--epochs", "1", "--save_dir", str(tmp_path / "run"), "--device", "cuda"])
    assert "CUDA is not available here; pass --device cpu" in line and not (tmp_path / "run").exists()


def test_a_fresh_run_refuses_a_folder_holding_a_run_and_overwrite_replaces_it(capsys, run_copy):
    import pretrain
    from core.checkpoint import load_checkpoint

    before = snapshot(run_copy)
    line = pretrain_error(capsys, TINY + ["--epochs", "1", "--save_dir", str(run_copy)])
    assert "already holds a run (model.pth, best_model.pth)" in line
    assert f"--resume {run_copy / 'model.pth'}" in line and "--overwrite" in line
    assert snapshot(run_copy) == before
    pretrain.main(TINY + ["--epochs", "1", "--save_dir", str(run_copy), "--overwrite", "--seed", "1"])
    assert load_checkpoint(run_copy / "model.pth")["epoch"] == 1 and len(log_epochs(run_copy)) == 1
    assert load_checkpoint(run_copy / "best_model.pth")["config"]["seed"] == 1


def test_resuming_a_best_checkpoint_names_the_file_that_can_be_resumed(capsys, run_copy):
    line = pretrain_error(capsys, TINY + ["--epochs", "3", "--save_dir", str(run_copy),
                                          "--resume", str(run_copy / "best_model.pth")])
    assert "holds weights only" in line and f"resume from the last epoch's {run_copy / 'model.pth'}" in line
    assert f"--init_from {run_copy / 'best_model.pth'}" in line


@pytest.mark.parametrize("flags, shown", [
    (["--lr", "0.5"], "--lr 0.003 (now 0.5)"),
    (["-b", "16"], "--batch_size 32 (now 16)"),
    (["--no-augmentation"], "--augmentation True (now False)"),
    (["--seed", "3"], "--seed 0 (now 3)"),
])
def test_resume_refuses_a_changed_recipe_naming_the_flag_and_both_values(capsys, run_copy, flags, shown):
    before = snapshot(run_copy)
    line = pretrain_error(capsys, TINY + ["--epochs", "3", "--save_dir", str(run_copy),
                                          "--resume", str(run_copy / "model.pth"), *flags])
    assert shown in line and "a resumed run keeps its recipe" in line and "--epochs" in line
    assert snapshot(run_copy) == before


def test_resume_refuses_fewer_epochs_than_trained_and_a_finished_run_has_nothing_to_do(capsys, run_copy):
    import pretrain

    before = snapshot(run_copy)
    line = pretrain_error(capsys, TINY + ["--epochs", "1", "--save_dir", str(run_copy),
                                          "--resume", str(run_copy / "model.pth")])
    assert "has already trained 2 epochs, more than --epochs 1" in line
    pretrain.main(TINY + ["--epochs", "2", "--save_dir", str(run_copy), "--resume", str(run_copy / "model.pth")])
    assert "has finished its 2 epochs; nothing to do" in capsys.readouterr().out
    assert snapshot(run_copy) == before


def test_resume_with_more_epochs_continues_on_the_longer_schedule_and_records_it(tmp_path):
    import yaml

    import pretrain
    from core.checkpoint import load_checkpoint

    pretrain.main(TINY + ["--epochs", "3", "--save_dir", str(tmp_path / "full")])
    pretrain.main(TINY + ["--epochs", "2", "--save_dir", str(tmp_path / "short")])
    pretrain.main(TINY + ["--epochs", "3", "--save_dir", str(tmp_path / "short"),
                          "--resume", str(tmp_path / "short" / "model.pth")])
    full, resumed = log_epochs(tmp_path / "full"), log_epochs(tmp_path / "short")
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    # epoch 3 runs at the lr of the 3-epoch schedule, not past the end of the 2-epoch cosine (lr 0)
    assert resumed[2]["lr"] == pytest.approx(full[2]["lr"]) and full[2]["lr"] == pytest.approx(0.0015)
    assert resumed[2]["resumed"] == {"from_epoch": 2, "checkpoint": str(tmp_path / "short" / "model.pth"),
                                     "changed": {"epochs": [2, 3]}}
    config_text = (tmp_path / "short" / "model.config.yaml").read_text()
    assert config_text.startswith(f"# resumed after epoch 2 from {tmp_path / 'short' / 'model.pth'} with epochs 2 -> 3\n")
    assert yaml.safe_load(config_text)["epochs"] == 3
    ckpt = load_checkpoint(tmp_path / "short" / "model.pth")
    assert ckpt["epoch"] == 3 and ckpt["resumes"] == [resumed[2]["resumed"]]


def test_resume_with_more_epochs_continues_timms_schedule_too(tmp_path):
    import pretrain

    timm = ["--schedule", "cosine_timm", "--min_lr", "1e-4", "--warmup_lr", "1e-5"]
    pretrain.main(TINY + timm + ["--epochs", "4", "--save_dir", str(tmp_path / "full")])
    pretrain.main(TINY + timm + ["--epochs", "2", "--save_dir", str(tmp_path / "short")])
    pretrain.main(TINY + timm + ["--epochs", "4", "--save_dir", str(tmp_path / "short"),
                                 "--resume", str(tmp_path / "short" / "model.pth")])
    full, resumed = log_epochs(tmp_path / "full"), log_epochs(tmp_path / "short")
    # epochs 3 and 4 run at the 4-epoch schedule's rates (the 2-epoch one would give min_lr)
    assert [r["lr"] for r in resumed[2:]] == pytest.approx([r["lr"] for r in full[2:]])
    assert resumed[3]["lr"] > 1e-4 * 1.5


def test_non_finite_weights_are_never_written_and_the_last_good_checkpoint_stays(capsys, tmp_path):
    import torch

    from core.checkpoint import load_checkpoint

    # lr 3e8, one batch of all 60 images per epoch: epoch 1 (one step) ends finite, epoch 2's forward pass overflows BatchNorm's running_var
    # while its loss (on batch statistics) stays finite
    line = pretrain_error(capsys, TINY + ["--epochs", "2", "--warmup_epochs", "0", "--lr", "3e8", "-b", "60",
                                          "--save_dir", str(tmp_path)])
    assert "epoch 2 left non-finite values in encoder." in line and "running_var" in line
    assert f"{tmp_path / 'model.pth'} keeps the last good epoch" in line
    for name in ("model.pth", "best_model.pth"):
        ckpt = load_checkpoint(tmp_path / name)
        assert ckpt["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert [r["epoch"] for r in log_epochs(tmp_path)] == [1]


# --------------------------------------------------------------------------- the feature cache

CACHE_SPEC = dict(name="fashion_mnist", split="test", classes=[0, 1, 2, 3, 4, 5], max_per_class=6, image_size=16)


def cached(ckpt, cache):
    from features import get_features

    return get_features(ckpt, CACHE_SPEC, ["encoder", "layer2"], cache_dir=cache, device="cpu", show_progress=False)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def same_shape_noise(path: Path) -> None:
    import numpy as np

    array = np.load(path)
    np.save(path, np.random.default_rng(0).standard_normal(array.shape).astype(array.dtype))


@pytest.mark.parametrize("damage, problem", [
    (truncate, "has {} bytes but had"),
    (lambda p: p.unlink(), "is missing"),
    (same_shape_noise, "changed since it was written (its SHA-256 differs"),
])
def test_a_damaged_cache_file_is_named_and_its_entry_rebuilt(tmp_path, tiny_ckpts, damage, problem):
    import features.entry as features

    cache = tmp_path / "cache"
    first = cached(tiny_ckpts["base"], cache)
    reference = {layer: first[layer].clone() for layer in ("encoder", "layer2")}
    target = first.path / "encoder.npy"
    damage(target)
    expected = problem.format(target.stat().st_size) if target.exists() else problem
    getattr(features, "_VERIFIED", set()).clear()  # as in a new process
    with pytest.warns(UserWarning) as caught:
        again = cached(tiny_ckpts["base"], cache)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and f"feature cache: {target} " in messages[0] and expected in messages[0]
    assert f"rebuilding the entry {first.path}" in messages[0]
    for layer, value in reference.items():
        assert torch_equal(again[layer], value), layer
    assert sorted(p.name for p in cache.iterdir()) == [first.path.name]  # no leftover of the old entry


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_checksums_are_verified_once_per_process_and_file(tmp_path, tiny_ckpts, monkeypatch):
    import json

    import core.checkpoint
    import features.entry as features

    cache = tmp_path / "cache"
    first = cached(tiny_ckpts["base"], cache)  # written (and so verified) by this process: no hashing of its files
    files = json.loads((first.path / "meta.json").read_text())["files"]
    assert set(files) == {"labels.npy"} | {f"{layer}.npy" for layer in first.meta["layers"]}
    assert files["encoder.npy"] == {"size": (first.path / "encoder.npy").stat().st_size,
                                    "sha256": core.checkpoint.file_hash(first.path / "encoder.npy")}
    hashed = []
    real_hash = core.checkpoint.file_hash
    monkeypatch.setattr(core.checkpoint, "file_hash", lambda path, *a, **k: hashed.append(Path(path).name)
                        or real_hash(path, *a, **k))
    cached(tiny_ckpts["base"], cache)
    assert hashed == ["base.pth"]  # only the checkpoint, for the cache key
    features._VERIFIED.clear()
    hashed.clear()
    cached(tiny_ckpts["base"], cache)
    cached(tiny_ckpts["base"], cache)
    assert sorted(hashed) == sorted(["base.pth", "labels.npy", "encoder.npy", "layer2.npy", "base.pth"])


def test_entries_written_before_the_records_are_checked_by_their_headers(tmp_path, tiny_ckpts):
    import json

    import features.entry as features

    cache = tmp_path / "cache"
    first = cached(tiny_ckpts["base"], cache)
    meta = json.loads((first.path / "meta.json").read_text())
    del meta["files"]
    (first.path / "meta.json").write_text(json.dumps(meta))
    features._VERIFIED.clear()
    cached(tiny_ckpts["base"], cache)  # a sound older entry is used as it is
    truncate(first.path / "layer2.npy")
    with pytest.warns(UserWarning, match="layer2.npy is unreadable"):
        again = cached(tiny_ckpts["base"], cache)
    assert "files" in again.meta and again["layer2"].shape[0] == len(again)


# --------------------------------------------------------------------------- datasets and checkpoints

def write_image_folder(root: Path, tree: dict[str, dict[str, int]], size: int = 12) -> Path:
    """``tree`` = {split folder ('' for none): {class: number of images}}; image k of class c is a
    constant image of a value given by (c, k), so labels can be checked from the pixels."""
    from PIL import Image

    for split, classes in tree.items():
        for c, (name, count) in enumerate(sorted(classes.items())):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                Image.new("RGB", (size, size), (40 * (ord(name[0]) % 6), 10 * k, 0)).save(folder / f"{k}.png")
    return root


def test_imagefolder_splits_share_the_training_class_map(tmp_path):
    import data

    root = write_image_folder(tmp_path, {"train": {"a": 2, "b": 2, "c": 2}, "test": {"a": 1, "c": 2}})
    train = data.build_dataset("imagefolder", "train", root=root)
    test = data.build_dataset("imagefolder", "test", root=root)
    assert train.classes == test.classes == ["a", "b", "c"] and test.num_classes == 3
    assert train.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert test.targets.tolist() == [0, 2, 2]  # c is class 2 in every split (was 1 in the test split)
    assert [Path(p).parent.name for p in test.paths] == ["a", "c", "c"]
    assert not test.test_is_train


def test_a_split_with_a_class_the_training_split_lacks_is_one_line(tmp_path):
    import data

    root = write_image_folder(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "d": 1}})
    assert data.build_dataset("imagefolder", "train", root=root).num_classes == 2
    with pytest.raises(data.DatasetError) as info:
        data.build_dataset("imagefolder", "test", root=root)
    message = str(info.value)
    assert f"{root / 'val'} has class folder(s) d that {root / 'train'} lacks" in message and "\n" not in message


def image_folder_args(root: Path, save_dir: Path, classes: int = 3) -> list[str]:
    return ["--dataset", "imagefolder", "--data", str(root), "--num_classes", str(classes), "--image_size", "16",
            "--arch", "resnet18", "--stem", "cifar", "--width", "0.125", "-b", "4", "--workers", "0",
            "--epochs", "1", "--warmup_epochs", "0", "--device", "cpu", "--save_dir", str(save_dir)]


def test_validating_on_the_training_images_is_warned(tmp_path):
    import pretrain

    root = write_image_folder(tmp_path / "flat", {"": {"a": 3, "b": 3, "c": 3}})
    with pytest.warns(UserWarning, match=r"no test/ or val/ folder, so 'val top-1' is measured on the training images"):
        pretrain.main(image_folder_args(root, tmp_path / "run"))
    split = write_image_folder(tmp_path / "split", {"train": {"a": 3, "b": 3, "c": 3}, "test": {"a": 1, "b": 1, "c": 1}})
    with warnings_recorded() as caught:
        pretrain.main(image_folder_args(split, tmp_path / "run2"))
    assert not [w for w in caught if "val top-1" in str(w.message)]
    with warnings_recorded() as caught:  # a held-out part of the training split is no warning either
        pretrain.main(image_folder_args(root, tmp_path / "run3") + ["--val_split", "0.34"])
    assert not [w for w in caught if "val top-1" in str(w.message)]


def warnings_recorded():
    import warnings

    return warnings.catch_warnings(record=True)


def test_a_corrupt_image_read_by_a_worker_is_the_same_one_line_as_without_workers(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", {"train": {"a": 4, "b": 4}, "test": {"a": 2, "b": 2}})
    (root / "train" / "b" / "9.png").write_bytes(b"not an image at all")
    lines = []
    for workers in ("0", "2"):
        args = image_folder_args(root, tmp_path / f"run{workers}", classes=2)
        args[args.index("--workers") + 1] = workers
        lines.append(pretrain_error(capsys, args))
    assert lines[0] == lines[1]
    assert f"{root / 'train' / 'b' / '9.png'} is not a readable image" in lines[0]


def test_entry_points_print_warnings_as_one_line():
    import warnings

    from core.errors import cli_main

    @cli_main
    def entry():
        return (warnings.formatwarning("the cache was rebuilt", UserWarning, "features/cache.py", 1),
                warnings.formatwarning("old", DeprecationWarning, "x.py", 2))

    user, deprecation = entry()
    assert user == "warning: the cache was rebuilt\n" and deprecation.startswith("x.py:2: DeprecationWarning: old")
    assert warnings.formatwarning("w", UserWarning, "y.py", 3).startswith("y.py:3: UserWarning: w")  # restored


def test_a_checkpoint_whose_weights_do_not_fit_its_recorded_model_is_one_line(tmp_path, tiny_ckpts, capsys):
    import torch

    import eval_nc
    from core.checkpoint import UserError, model_from_checkpoint

    ckpt = torch.load(tiny_ckpts["base"], weights_only=True)
    ckpt["model_kwargs"]["width"] = 0.25  # the weights are those of width 0.125
    torch.save(ckpt, tmp_path / "mismatch.pth")
    with pytest.raises(UserError) as info:
        model_from_checkpoint(tmp_path / "mismatch.pth")
    message = str(info.value)
    assert f"checkpoint {tmp_path / 'mismatch.pth'}: the weights do not fit the model it describes" in message
    assert "shape of encoder." in message and "in the file" in message and "\n" not in message
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        eval_nc.main(["--ckpt", str(tmp_path / "mismatch.pth"), "--dataset", "fashion_mnist:classes=0-5",
                      "--image_size", "16", "--max_per_class", "2", "--device", "cpu", "--layers", "encoder",
                      "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "it/s" not in line]
    assert len(err) == 1 and "the weights do not fit the model it describes" in err[0]


def eval_nc_args(ckpt: Path, tmp_path: Path, dataset: str) -> list[str]:
    return ["--ckpt", str(ckpt), "--dataset", dataset, "--image_size", "16", "--max_per_class", "2",
            "--device", "cpu", "--layers", "encoder", "--cache_dir", str(tmp_path / "cache"),
            "--out_dir", str(tmp_path / "out")]


def test_evaluating_other_classes_of_the_training_dataset_is_one_line(finished_run, tmp_path, capsys):
    import eval_nc

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # trained on classes 0-5: same count, other classes
        eval_nc.main(eval_nc_args(finished_run / "model.pth", tmp_path, "fashion_mnist:classes=4-9"))
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "it/s" not in line]
    assert len(err) == 1 and err[0].startswith(f"error: class mismatch: {finished_run / 'model.pth'} was trained on "
                                               "other fashion_mnist classes (label 0 is 'Coat' here but was 'T-shirt/top'")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    rows = eval_nc.main(eval_nc_args(finished_run / "model.pth", tmp_path, "fashion_mnist:classes=0-5"))
    assert [r["layer"] for r in rows] == ["encoder"]


def test_older_checkpoints_are_checked_by_their_config_and_foreign_ones_not_at_all(finished_run):
    from data import parse_spec
    from core.checkpoint import UserError, load_checkpoint
    from evaluate.runs import Run, trained_classes

    ckpt = load_checkpoint(finished_run / "model.pth")
    assert ckpt["class_names"] == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal"]
    run = Run("m", finished_run / "model.pth", ckpt["model_kwargs"], ckpt["state_dict"], config=ckpt["config"],
              class_names=ckpt["class_names"])
    assert trained_classes(run, parse_spec("fashion_mnist:classes=0-5")) == ckpt["class_names"]
    assert trained_classes(run, parse_spec("digits")) is None  # another dataset: only the class count is checked
    run.class_names = None  # a checkpoint from before the class names were recorded
    assert trained_classes(run, parse_spec("fashion_mnist:classes=0-5")) is None
    with pytest.raises(UserError, match=r"trained on fashion_mnist classes \[0, 1, 2, 3, 4, 5\], not \[4, 5, 6, 7, 8, 9\]"
                                        r".*\(fashion_mnist:classes=0\+1\+2\+3\+4\+5\)"):
        trained_classes(run, parse_spec("fashion_mnist:classes=4-9"))
    run.config = {}  # another codebase's checkpoint: nothing recorded, nothing checked
    assert trained_classes(run, parse_spec("fashion_mnist:classes=4-9")) is None
