"""One entry of the feature cache: its files, how they are written and read, and how they are checked.

An entry is a directory holding ``meta.json``, ``labels.npy`` and one ``<layer>.npy`` per layer
(N x D; a dotted module path is its own file name, ``encoder.layer4.1.conv2.npy``).
:class:`MemmapSink` writes the files during extraction; :class:`FeatureSet` reads them
(memory-mapped) for the evaluators.

The cache trusts no file it did not check: ``meta.json`` records each file's size and SHA-256
when the entry is written. Every use checks the sizes (one ``stat`` per file); the checksum of
each file is verified once per process (a later use of the same unchanged file, same size,
mtime and inode, is not hashed again; hashing runs at several hundred MB/s, small next to the
forward pass that made the file). :func:`check_entry` says what is wrong with an entry: a
missing, truncated or altered file or an unreadable ``meta.json``. Entries written before the
records existed are checked by their ``.npy`` headers instead.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from core import checkpoint as ckpt_io
from core.errors import FileSystemError, UserError, os_error

STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}
_SAFE_LAYER = re.compile(r"^[A-Za-z0-9_.-]+$")
_VERIFIED: set[tuple[str, int, int, int]] = set()  # (path, size, mtime_ns, inode) whose checksum matched


def layer_file(layer: str) -> str:
    """File name of a layer's features inside a cache entry."""
    if not _SAFE_LAYER.match(layer):
        raise ValueError(f"layer name {layer!r} cannot be a file name; use letters, digits, '_', '.', '-'")
    return f"{layer}.npy"


class FeatureSet:
    """The cached features of one (checkpoint, dataset, transform, dtype) entry.

    ``labels`` (N LongTensor), ``layers`` (the requested layer names), ``num_classes``, ``meta``
    (the entry's meta.json), ``path`` (its directory); ``fs[layer]`` is the N x D float32 tensor
    (memory-mapped when stored as float32) and ``iter_batches(layer, batch_size)`` streams
    ``(features, labels)`` chunks without loading the layer at once.
    """

    def __init__(self, path: str | Path, layers: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.meta = _read_meta(self.path)
        self.layers = list(layers) if layers is not None else list(self.meta["layers"])
        for layer in self.layers:
            if layer not in self.meta["layers"]:
                raise UserError(f"layer {layer!r} is not in the feature cache entry {self.path} "
                                f"(stored: {', '.join(self.meta['layers'])})")
        self.labels = torch.from_numpy(np.asarray(self._open("labels.npy"), dtype=np.int64))
        self.num_classes = int(self.meta["num_classes"])

    def __len__(self) -> int:
        return int(self.meta["num_samples"])

    def dim(self, layer: str) -> int:
        return int(self.meta["layers"][layer]["dim"])

    def _array(self, layer: str) -> np.ndarray:
        if layer not in self.meta["layers"]:
            raise UserError(f"layer {layer!r} is not in the feature cache entry {self.path} "
                            f"(stored: {', '.join(self.meta['layers'])})")
        array = self._open(layer_file(layer))
        expected = (len(self), self.dim(layer))
        if array.shape != expected or array.dtype != STORAGE_DTYPES[self.meta["dtype"]]:
            raise UserError(f"feature cache file {self.path / layer_file(layer)} holds {array.shape} "
                            f"{array.dtype}, expected {expected} {self.meta['dtype']}; delete {self.path}")
        return array

    def _open(self, name: str) -> np.ndarray:
        """The memory-mapped file ``name`` of the entry, its size checked against meta.json."""
        path = self.path / name
        problem = _size_problem(path, self.meta.get("files", {}).get(name))
        if problem is None:
            try:
                return np.load(path, mmap_mode="c")
            except (OSError, ValueError) as exc:
                problem = f"{path} is unreadable ({str(exc).splitlines()[0]})"
        raise UserError(f"feature cache: {problem}; run the command again to rebuild the entry {self.path}")

    def __getitem__(self, layer: str) -> torch.Tensor:
        array = self._array(layer)
        if array.dtype != np.float32:
            return torch.from_numpy(array.astype(np.float32))
        return torch.from_numpy(np.asarray(array))

    def iter_batches(self, layer: str, batch_size: int = 65536) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(features B x D float32, labels B)`` chunks in sample order."""
        array = self._array(layer)
        for start in range(0, len(self), batch_size):
            chunk = np.array(array[start:start + batch_size], dtype=np.float32)
            yield torch.from_numpy(chunk), self.labels[start:start + batch_size]

    def __repr__(self) -> str:
        return f"FeatureSet({self.path.name}, samples={len(self)}, layers={self.layers})"


def _read_meta(entry: Path) -> dict:
    try:
        with open(entry / "meta.json", encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or not isinstance(meta.get("layers"), dict):
            raise ValueError("not an entry's meta.json")
        return meta
    except (OSError, ValueError) as exc:
        raise UserError(f"feature cache entry {entry} is damaged ({type(exc).__name__}); delete it") from None


def _file_record(path: Path) -> dict:
    """Size and SHA-256 of a file just written, for meta.json."""
    return {"size": path.stat().st_size, "sha256": ckpt_io.file_hash(path)}


def _remember(path: Path) -> None:
    st = path.stat()
    _VERIFIED.add((str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino))


def _size_problem(path: Path, record: dict | None) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path} is missing"
    if record is not None and size != record["size"]:
        return f"{path} has {size} bytes but had {record['size']} when written"
    return None


def _file_problem(path: Path, record: dict | None, shape: tuple, dtype) -> str | None:
    """What is wrong with one file of an entry, or None. With a record (size, sha256): the size,
    then the checksum once per process; without one (older entries): the ``.npy`` header."""
    problem = _size_problem(path, record)
    if problem is not None:
        return problem
    if record is not None:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in _VERIFIED:
            if ckpt_io.file_hash(path) != record["sha256"]:
                return f"{path} changed since it was written (its SHA-256 differs from meta.json's)"
            _VERIFIED.add(key)
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return f"{path} is unreadable ({str(exc).splitlines()[0]})"
    if array.shape != shape or array.dtype != dtype:
        return f"{path} holds {array.shape} {array.dtype}, expected {shape} {np.dtype(dtype)}"
    return None


def check_entry(entry: Path, layers: Sequence[str]) -> tuple[dict | None, str | None]:
    """(meta.json, None) when the files of ``entry`` that ``layers`` need (and its labels) are the
    ones written, else (None, what is wrong); see the module doc."""
    try:
        meta = _read_meta(entry)
        n, dtype = int(meta["num_samples"]), STORAGE_DTYPES[meta["dtype"]]
        dims = {name: int(meta["layers"][name]["dim"]) for name in layers if name in meta["layers"]}
    except (UserError, KeyError, TypeError, ValueError):
        return None, f"{entry / 'meta.json'} is missing or unreadable"
    files = meta.get("files") or {}
    needed = [("labels.npy", (n,), np.int64)] + [(layer_file(name), (n, dim), dtype) for name, dim in dims.items()]
    for name, shape, kind in needed:
        problem = _file_problem(entry / name, files.get(name), shape, kind)
        if problem is not None:
            return None, problem
    return meta, None


def _memmap(path: Path, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new ``.npy`` file of ``shape``, memory-mapped for writing, its blocks allocated first
    (``posix_fallocate``): a full disk is then an ``OSError`` here, not a bus error (SIGBUS) when a
    page of the mapping is later written to a file system that has no room for it."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    size = path.stat().st_size
    if size and hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
            except OSError as exc:  # a file system without it: the free-space check before stays the guard
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
    return array


class MemmapSink:
    """Writes each layer into ``directory/<layer>.npy`` and the labels into ``labels.npy``
    (memory-mapped, shape fixed to ``num_samples`` rows, opened on the first batch once the width is
    known). ``dims`` maps each layer to its width after :meth:`close`. Before the first batch's
    files are made, the free space is checked against the bytes they need; a full disk is one
    :class:`core.errors.FileSystemError` naming the folder and the cause (the caller removes the
    partial entry)."""

    def __init__(self, directory: str | Path, num_samples: int, dtype: str = "float32") -> None:
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
        self.directory = Path(directory)
        self.num_samples = int(num_samples)
        self.dtype = dtype
        self.dims: dict[str, int] = {}
        self._maps: dict[str, np.memmap] = {}
        self._labels = self._open("labels.npy", np.int64, (self.num_samples,))

    def _open(self, name: str, dtype, shape: tuple[int, ...]) -> np.memmap:
        try:
            return _memmap(self.directory / name, dtype, shape)
        except OSError as exc:
            raise os_error(exc, self.directory.parent, f"write {name} into the feature cache") from None

    def _check_space(self, features: dict[str, torch.Tensor]) -> None:
        itemsize = np.dtype(STORAGE_DTYPES[self.dtype]).itemsize
        need = sum(self.num_samples * value.shape[1] * itemsize for value in features.values()) + 4096 * len(features)
        free = shutil.disk_usage(self.directory).free
        if need > free:
            raise FileSystemError(f"cannot write the feature cache in {self.directory.parent}: its {len(features)} "
                                  f"layer files need {need / 2**20:.1f} MiB but {free / 2**20:.1f} MiB are free "
                                  f"(ENOSPC); free space there or pass another --cache_dir")

    def write(self, start: int, features: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        stop = start + len(labels)
        if stop > self.num_samples:
            raise RuntimeError(f"the loader yielded more than the {self.num_samples} samples the dataset announced")
        new = {name: value for name, value in features.items() if name not in self._maps}
        if new:
            self._check_space(new)
        for name, value in features.items():
            if name not in self._maps:
                self._maps[name] = self._open(layer_file(name), STORAGE_DTYPES[self.dtype],
                                              (self.num_samples, value.shape[1]))
                self.dims[name] = int(value.shape[1])
            self._maps[name][start:stop] = value.numpy()
        self._labels[start:stop] = labels.numpy()

    def close(self, num_samples: int) -> None:
        if num_samples != self.num_samples:
            raise RuntimeError(f"the loader yielded {num_samples} samples but the dataset announced {self.num_samples}")
        for array in [*self._maps.values(), self._labels]:
            array.flush()
        self._maps.clear()
        del self._labels
