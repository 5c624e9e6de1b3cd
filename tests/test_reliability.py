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
