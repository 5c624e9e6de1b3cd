"""A task's output set in a results folder: a rerun replaces the whole set, and never another task's files.

An evaluator writes its results into ``--out_dir`` as files named after its ``--out_name``: the
tables, its resolved config and its figures. ``<out_dir>/.<out_name>.outputs.json`` lists the
files the last run of that task wrote there. When a run writes its results,
:func:`replace_outputs` removes every file the previous run listed (except one that another
task's list names too), then records each file this process writes into the folder through
:mod:`core.io`, until the command ends. So a rerun that draws fewer figures (``--scorers gmm``
after ``energy``) leaves none of the earlier figures beside its new tables, while a file of
another task, or one that no task listed (a summary, a note of yours), is never removed. Until a
rerun has computed its results, the previous ones stay as they were.

When one process has several sets open in a folder (``ood`` and ``ood_search``), a file belongs to
the set whose name is the longest prefix of the file's name, else to the set opened last.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from core.errors import os_error
from core.io import atomic_write_text, watch_writes
from core.lock import at_release

SUFFIX = ".outputs.json"
_OPEN: dict[str, dict[str, "OutputSet"]] = {}  # folder -> name -> its open set, in the order opened
_STOP: dict[str, Callable[[], None]] = {}  # folder -> stops its write watcher


class OutputSet:
    """The files of task ``name`` in ``folder`` written by this process since the set was opened."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name, self.files = folder, name, []

    @property
    def manifest(self) -> Path:
        return manifest_path(self.folder, self.name)

    def add(self, path: Path) -> None:
        if path.name not in self.files:
            self.files.append(path.name)
            self.save()

    def save(self) -> None:
        atomic_write_text(self.manifest, json.dumps({"task": self.name, "files": self.files}, indent=1) + "\n")


def manifest_path(folder: str | os.PathLike, name: str) -> Path:
    return Path(folder) / f".{name}{SUFFIX}"


def listed(folder: str | os.PathLike, name: str) -> list[str]:
    """The file names the manifest of task ``name`` in ``folder`` lists (empty without one)."""
    try:
        files = json.loads(manifest_path(folder, name).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and f == Path(f).name and not f.startswith(".")]


def _other_tasks_files(folder: Path, name: str) -> set[str]:
    others: set[str] = set()
    for entry in folder.glob(f".*{SUFFIX}"):
        other = entry.name[1:-len(SUFFIX)]
        if other != name:
            others.update(listed(folder, other))
    return others


def _route(folder: str, path: Path) -> None:
    """Add ``path`` to the open set it belongs to (see the module doc)."""
    sets = list(_OPEN.get(folder, {}).values())
    if not sets or path.name.startswith("."):
        return
    prefixed = [s for s in sets if path.name.startswith(s.name)]
    owner = max(prefixed, key=lambda s: len(s.name)) if prefixed else sets[-1]
    owner.add(path)


def _close(folder: str, name: str) -> None:
    sets = _OPEN.get(folder, {})
    sets.pop(name, None)
    if not sets:
        _OPEN.pop(folder, None)
        stop = _STOP.pop(folder, None)
        if stop is not None:
            stop()


def replace_outputs(folder: str | os.PathLike, name: str) -> OutputSet:
    """Remove the files the previous run of task ``name`` wrote into ``folder`` (those its manifest
    lists and no other task's does) and record, from now until the command ends, every file this
    process writes there as the new set (see the module doc)."""
    folder = Path(folder)
    key = os.path.abspath(folder)
    keep = _other_tasks_files(folder, name)
    for file in listed(folder, name):
        if file not in keep:
            try:
                (folder / file).unlink(missing_ok=True)
            except OSError as exc:
                raise os_error(exc, folder / file, "remove the previous result") from None
    outputs = OutputSet(folder, name)
    outputs.save()
    sets = _OPEN.setdefault(key, {})
    sets.pop(name, None)
    sets[name] = outputs
    if key not in _STOP:
        _STOP[key] = watch_writes(folder, lambda path: _route(key, path))
    at_release(lambda failed: _close(key, name))
    return outputs
