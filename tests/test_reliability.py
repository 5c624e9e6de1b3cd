"""What a user can get wrong or a machine can break, and what nc-ood does about it: file
permissions, temporaries of killed processes, typed configuration values, run folders,
resumed runs, damaged feature caches, inconsistent datasets and checkpoints."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import engine.io as io_
from engine.io import atomic_torch_save, atomic_write_text

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
    from engine.features import get_features

    umask(0o022)
    fs = get_features(tiny_ckpts["base"], dict(name="digits", split="test", max_per_class=2, image_size=16),
                      ["encoder"], cache_dir=tmp_path / "cache", device="cpu", show_progress=False)
    assert fs.path.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in fs.path.iterdir())


SLOW_WRITER = """
import sys, time
from engine.io import _atomic
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
        # the next run writes into the same folder
        subprocess.run([sys.executable, "-c", "import sys; from engine.io import atomic_write_text; "
                        "atomic_write_text(sys.argv[1], 'x')", str(tmp_path / "model.config.yaml")],
                       cwd=ROOT, env=PYTHON_ENV, check=True)
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
    from engine.config import parse_config

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
    from engine.config import ConfigError

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
    from engine.config import ConfigError

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
