"""One writer per run: a process holds the files it is about to write from its first moment.

A pretraining run holds ``<save_dir>/.<ckpt_file>.lock`` and an evaluator holds
``<out_dir>/.<out_name>.lock``, with an exclusive OS lock (``fcntl.flock``), from its start to its
end. A second process asking for the same lock is refused at once, in one line naming the folder
and the holder as the lock file records it (pid, host, start time and command). The OS releases
the lock when its process ends however it ends (a crash, ``kill -9``), so a lock file a killed
process left behind is simply taken by the next run; a process that ends normally (an error
included) removes its lock file, and the folders the lock created when they are still empty.

Locks belong to commands: an entry point runs inside :func:`command_scope` (:func:`core.config.command`),
whose end releases the locks it took; :func:`hold` outside a command (a library call, a test)
takes none. Locks are re-entrant within a process (asking again for a lock it holds gets it).
Callbacks registered with :func:`at_release` run when the command ends, told whether it failed: a
failed fresh pretraining run removes the few files it wrote before its first checkpoint, and an
evaluator stops recording its output set (:mod:`core.outputs`); outside a command they run at
interpreter exit.

On NFS, Linux implements ``flock`` with the server's byte-range locks, so the lock holds across
machines sharing the folder when the server supports locking.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Callable, Iterator

from core.errors import UserError, os_error

_HELD: dict[str, "FolderLock"] = {}
_CALLBACKS: list[Callable[[bool], None]] = []
_DEPTH = [0]  # commands running in this process (nested calls of entry points)


class FolderLock:
    """A held lock file (see the module doc)."""

    def __init__(self, path: Path, fd: int, created: list[Path]) -> None:
        self.path, self.fd, self.created, self.pid = path, fd, created, os.getpid()

    def release(self) -> None:
        """Remove the lock file (still holding the lock) and close it; remove the folders the lock
        created when they are empty."""
        if self.pid != os.getpid():  # a forked child (a DataLoader worker) never releases its parent's lock
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
        for folder in self.created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break


def _make_folder(folder: Path, flag: str) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder; move it or pass another {flag}")
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, folder, f"create {flag}") from None
    return missing


def _holder(path: Path) -> str:
    """Who holds the lock at ``path``, as its file records it."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']}, started {info['started']}: "
                f"{info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "its process did not record itself yet"


def hold(folder: str | os.PathLike, name: str, *, what: str, flag: str, elsewhere: str) -> FolderLock | None:
    """Hold ``<folder>/.<name>.lock`` until the command ends (None outside a command; see the module
    doc). A lock another process holds is a one-line :class:`UserError`: ``<flag> <folder> is in use
    by another <what> (...); wait for it to end, or <elsewhere>``; a folder that cannot be created or
    written is a one-line :class:`core.errors.FileSystemError`."""
    if not _DEPTH[0]:
        return None
    folder = Path(folder).expanduser()
    path = folder / f".{name}.lock"
    key = os.path.abspath(path)
    if key in _HELD:
        return _HELD[key]
    created = _make_folder(folder, flag)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise os_error(exc, folder, f"write in {flag}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise os_error(exc, path, "lock") from None
            raise UserError(f"{flag} {folder} is in use by another {what} ({_holder(path)}); wait for it to end, "
                            f"or {elsewhere}") from None
        try:  # the file may have been removed by its last holder between our open and flock: retry on a fresh one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    lock = FolderLock(path, fd, created)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv and sys.argv[0] else "python"
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": command})
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (record + "\n").encode("utf-8"), 0)
    except OSError as exc:
        lock.release()
        raise os_error(exc, path) from None
    _HELD[key] = lock
    return lock


def at_release(callback: Callable[[bool], None]) -> None:
    """Run ``callback(failed)`` when the command ends (before its locks are released)."""
    _CALLBACKS.append(callback)


def release_all(failed: bool = False) -> None:
    """Run the :func:`at_release` callbacks, then release every lock this process holds
    (``failed``: the command ended in an error)."""
    try:
        while _CALLBACKS:
            _CALLBACKS.pop(0)(failed)
    finally:
        while _HELD:
            _, lock = _HELD.popitem()
            lock.release()


@contextlib.contextmanager
def command_scope() -> Iterator[None]:
    """The span of one command: the locks it holds and the callbacks it registers end with it."""
    _DEPTH[0] += 1
    try:
        yield
    except BaseException:
        _DEPTH[0] -= 1
        if not _DEPTH[0]:
            release_all(failed=True)
        raise
    _DEPTH[0] -= 1
    if not _DEPTH[0]:
        release_all()


atexit.register(release_all)
