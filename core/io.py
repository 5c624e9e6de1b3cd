"""Atomic file writes: checkpoints, tables, figures and cache entries land whole or not at all.

Every file the toolkit writes goes through here: the content lands in a temporary file in
the destination folder and is renamed over the target, so an interrupted run never leaves a
half-written checkpoint, table or cache entry behind. Files and folders get the permissions a
plain ``open`` / ``mkdir`` would give them (0666 / 0777 minus the umask), so colleagues sharing
a results or cache folder can read them.

A temporary file or folder is hidden and names the host and process writing it,
``.<name>@<host>@<pid>@<random>.tmp``. One that a killed process left behind is removed by
:func:`remove_stale_temps`, which every process runs once on each folder it first writes into:
a temporary of this host whose process is gone is deleted, one whose process still runs is never
touched, and one of another host (a shared file system) is left alone. Unnamed temporaries of
older versions (``.<name>.<random>.tmp`` files, ``.tmp-<key>-<random>`` cache folders) are
removed once nothing in them changed for :data:`LEGACY_TEMP_AGE` seconds.

A write the operating system refuses (a full disk, a read-only folder, a file where the folder
should be) is one :class:`core.errors.FileSystemError` naming the target and the cause; the
previous file at the target is untouched. :func:`watch_writes` lets a task learn which files this
process writes into a folder (:mod:`core.outputs`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from core.errors import os_error

LEGACY_TEMP_AGE = 24 * 3600  # seconds without change after which an unnamed (older-version) temporary is stale
_TEMP = re.compile(r"^\.(?P<name>.+)@(?P<host>[A-Za-z0-9.-]+)@(?P<pid>\d+)@[A-Za-z0-9_]+\.tmp$")
_LEGACY_TEMP = re.compile(r"^\.(.+\.[a-z0-9_]{8}\.tmp|tmp-[0-9a-f]{16}-[a-z0-9_]{8})$")
_TIDIED: set[str] = set()  # folders this process has already cleaned
_WATCHERS: dict[str, list[Callable[[Path], None]]] = {}  # folder -> callbacks told of each file written into it


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (another thread may be creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def temp_prefix(name: str) -> str:
    """Prefix of a temporary beside ``name``: hidden, naming this host and process (see the module doc)."""
    return f".{name}@{_host()}@{os.getpid()}@"


def make_temp_file(folder: str | os.PathLike, name: str) -> str:
    """An empty temporary file in ``folder`` for the target ``name``, with a plain ``open``'s permissions."""
    tidy(folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix(name), suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return tmp


def make_temp_dir(folder: str | os.PathLike, name: str) -> Path:
    """An empty temporary folder in ``folder`` for the target ``name``, with a plain ``mkdir``'s permissions."""
    tidy(folder)
    tmp = tempfile.mkdtemp(dir=folder, prefix=temp_prefix(name), suffix=".tmp")
    os.chmod(tmp, 0o777 & ~_umask())
    return Path(tmp)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _last_change(path: Path) -> float:
    """Newest modification time of ``path`` and, for a folder, of anything in it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for directory, _, files in os.walk(path):
            for name in files:
                try:
                    newest = max(newest, os.lstat(os.path.join(directory, name)).st_mtime)
                except OSError:
                    pass
    return newest


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries in ``folder`` that no running process is writing (see the module
    doc); returns what was removed. Never raises: a temporary that vanishes meanwhile is skipped."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host, now = _host(), time.time()
    for entry in entries:
        path = Path(entry.path)
        match = _TEMP.match(entry.name)
        try:
            if match:
                stale = match["host"] == host and not _alive(int(match["pid"]))
            else:
                stale = bool(_LEGACY_TEMP.match(entry.name)) and now - _last_change(path) > LEGACY_TEMP_AGE
            if not stale:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed


def tidy(folder: str | os.PathLike) -> None:
    """:func:`remove_stale_temps` on ``folder``, once per process."""
    key = os.path.abspath(folder)
    if key not in _TIDIED:
        _TIDIED.add(key)
        remove_stale_temps(folder)


def watch_writes(folder: str | os.PathLike, callback: Callable[[Path], None]) -> Callable[[], None]:
    """Call ``callback(path)`` after each file this process writes into ``folder`` through this
    module; returns the function that stops it."""
    key = os.path.abspath(folder)
    _WATCHERS.setdefault(key, []).append(callback)

    def stop() -> None:
        callbacks = _WATCHERS.get(key, [])
        if callback in callbacks:
            callbacks.remove(callback)
    return stop


def _written(path: Path) -> None:
    for callback in list(_WATCHERS.get(os.path.abspath(path.parent), ())):
        callback(path)


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_file(path.parent, path.name)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise os_error(exc, path) from None
        raise
    _written(path)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder + rename)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return _atomic(path, write)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    return _atomic(path, write)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically. It writes through a Python file object, so a failed
    write (a full disk) is the ``OSError`` of the system call, not the zip writer's generic error."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    return _atomic(path, write)


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """``fig.savefig`` to ``path`` atomically (format taken from the target's suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return _atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (a per-epoch log record); a line is written whole or not at all."""
    line = json.dumps(record, sort_keys=False) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
    except OSError as exc:
        raise os_error(exc, path) from None


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def iter_jsonl(path: str | os.PathLike) -> Iterable[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
