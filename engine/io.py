"""Atomic file writes and result tables (JSON + CSV + Markdown).

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
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch


LEGACY_TEMP_AGE = 24 * 3600  # seconds without change after which an unnamed (older-version) temporary is stale
_TEMP = re.compile(r"^\.(?P<name>.+)@(?P<host>[A-Za-z0-9.-]+)@(?P<pid>\d+)@[A-Za-z0-9_]+\.tmp$")
_LEGACY_TEMP = re.compile(r"^\.(.+\.[a-z0-9_]{8}\.tmp|tmp-[0-9a-f]{16}-[a-z0-9_]{8})$")
_TIDIED: set[str] = set()  # folders this process has already cleaned


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


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_file(path.parent, path.name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder + rename)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return _atomic(path, write)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """``fig.savefig`` to ``path`` atomically (format taken from the target's suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return _atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (a per-epoch log record); a line is written whole or not at all."""
    line = json.dumps(record, sort_keys=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()


def _fmt(value, digits: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.{digits}g}"
    return "" if value is None else str(value)


def _columns(rows: Sequence[dict], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """Rows (dicts) as a GitHub Markdown table; floats rounded to ``digits``."""
    cols = _columns(rows, columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c), digits) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def text_table(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """Rows (dicts) as an aligned plain-text table for the terminal."""
    cols = _columns(rows, columns)
    cells = [[_fmt(row.get(c), digits) for c in cols] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(out) + "\n"


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_results(rows: Sequence[dict], out_dir: str | os.PathLike, name: str,
                  columns: Sequence[str] | None = None, extra: dict | None = None,
                  digits: int = 4, bare_json: bool = False) -> dict[str, Path]:
    """Write ``rows`` as ``<name>.json`` (``{"rows": [...], **extra}``, or the bare list of rows
    with ``bare_json``), ``<name>.csv`` and ``<name>.md`` under ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    cols = _columns(rows, columns)
    payload = [dict(r) for r in rows] if bare_json else {"rows": [dict(r) for r in rows], **(extra or {})}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return {
        "json": atomic_write_text(out_dir / f"{name}.json", json.dumps(payload, indent=2, default=_json_default) + "\n"),
        "csv": atomic_write_text(out_dir / f"{name}.csv", buf.getvalue()),
        "md": atomic_write_text(out_dir / f"{name}.md", markdown_table(rows, cols, digits)),
    }


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def iter_jsonl(path: str | os.PathLike) -> Iterable[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
