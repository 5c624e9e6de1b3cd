"""Helpers of the tests at the edges (tests/test_edges_*.py): the tiny pretraining flags, the one
error line of an entry point, image folders, and a folder the operating system refuses to write."""
import contextlib
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
TINY = ["--dataset", "fashion_mnist", "--classes", "0", "1", "2", "3", "4", "5", "--num_classes", "6",
        "--image_size", "16", "--arch", "resnet18", "--stem", "cifar", "--width", "0.125", "-b", "32",
        "--workers", "0", "--lr", "0.003", "--warmup_epochs", "1", "--device", "cpu", "--max_per_class", "10"]
EVAL = ["--max_per_class", "6", "--image_size", "16", "--probe_epochs", "2", "--device", "cpu"]


def error_line(capsys, main, argv) -> str:
    """The one line ``main(argv)`` prints when it must fail with exit code 2 (progress bars aside)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.strip() and not any(bar in line for bar in ("it/s", "s/it", "img/s", "s/img"))]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def run_script(script: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """An entry point in its own process (another user's run, say)."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def files(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones included, relative and sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def write_images(root: Path, tree: dict[str, dict[str, int]], size: int = 12, seed: int = 0) -> list[Path]:
    """``tree`` = {split folder: {class: image count}} of random-noise PNGs; returns their paths."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = []
    for split, classes in tree.items():
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{k}.png")
                written.append(folder / f"{k}.png")
    return written


HOLDER = """
import sys, time
from core.lock import command_scope, hold
with command_scope():
    hold(sys.argv[1], sys.argv[2], what=sys.argv[3], flag=sys.argv[4], elsewhere="wait")
    print("holding", flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def held_elsewhere(folder: Path, name: str, what: str, flag: str):
    """Another process holds the lock ``name`` in ``folder`` (as a run of ``what`` does) until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), name, what, flag], cwd=ROOT, env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@contextlib.contextmanager
def read_only(folder: Path, monkeypatch):
    """``folder`` (created) refuses every file and folder made in it, as the system refuses a
    read-only folder: by its permissions, or for root (who writes anywhere) by the same
    ``PermissionError`` raised from ``os.open`` / ``os.mkdir``, through which every file is made."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    top = os.path.abspath(folder)
    inside = lambda path: os.path.abspath(path).startswith(top + os.sep)
    refuse = lambda path: PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    real_open, real_mkdir = os.open, os.mkdir

    def fake_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            raise refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    yield folder
