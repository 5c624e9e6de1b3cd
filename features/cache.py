"""The on-disk feature cache: the features of a (checkpoint, dataset, split, transform) are
extracted once, in one forward pass for all layers, and reused by every evaluator.

:class:`FeatureCache` keeps one directory per key (:mod:`features.entry`). The key is the SHA-256
of what determines the features: the checkpoint's content hash, the dataset spec with
``data.build_dataset``'s defaults filled in, the evaluation transform, the storage dtype and the
forward pass's precision, a fingerprint of the dataset's files (each file's path, size and
modification time in nanoseconds, from the file list the dataset already holds; see
:func:`files_fingerprint`), and, for a checkpoint of another codebase, the options it is converted
with; :data:`CACHE_FORMAT` changes every key when pooling or the layout changes. An image changed
in place, even with the same name and label, therefore misses the cache and is extracted anew.
New layers are extracted into a temporary directory and moved in only when complete, so an
interrupted extraction never leaves a layer that looks valid (and the next process removes the
folder it left, see :func:`core.io.remove_stale_temps`). A miss extracts every named layer of the
model (plus the requested module paths) in that one pass (pooled features are small), so later
requests are hits. An entry whose files fail their checks, or whose labels no longer match the
dataset, is named in a warning and rebuilt (the cache holds derived data only).
"""
from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import re
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from core import checkpoint as ckpt_io
from core.errors import UserError, os_error
from core.io import atomic_write_text, make_temp_dir, temp_prefix, tidy
from features.entry import (
    FeatureSet,
    MemmapSink,
    _file_record,
    _read_meta,
    _remember,
    check_entry,
    layer_file,
)
from features.extract import (
    PRECISIONS,
    _as_layer_list,
    describe_layers,
    extract,
    resolve_device,
)

CACHE_FORMAT = 2          # bump when pooling or the file layout changes: every key changes with it


def normalize_spec(dataset_spec: dict) -> dict:
    """``dataset_spec`` with ``build_dataset``'s defaults filled in, ``root`` made absolute and
    ``augment`` removed (features always use the evaluation transform), so equal datasets give
    equal keys."""
    from data import build_dataset

    spec = dict(dataset_spec)
    if spec.pop("augment", False):
        raise ValueError("dataset_spec has augment=True; features use the deterministic evaluation transform, "
                         "drop 'augment'")
    missing = [k for k in ("name", "split") if k not in spec]
    if missing:
        raise ValueError(f"dataset_spec needs {' and '.join(missing)} (the arguments of data.build_dataset)")
    defaults = {name: p.default for name, p in inspect.signature(build_dataset).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "augment"}
    spec = {**defaults, **spec}
    if spec.get("root") is not None:
        spec["root"] = str(Path(spec["root"]).expanduser().resolve())
    if spec.get("classes") is not None:
        spec["classes"] = [int(c) for c in spec["classes"]]
    return spec


def describe_transform(dataset, image_size) -> dict:
    """The dataset's transform as text (object addresses stripped, so the text is stable across runs)."""
    transform = getattr(dataset, "transform", None)
    text = None if transform is None else re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))
    return {"transform": text, "image_size": image_size}


def dataset_files(dataset) -> list[str]:
    """The files ``dataset``'s samples are read from: an image folder's image files (those of its
    selected samples), or the ``source_files`` of a dataset loaded from files into memory."""
    paths = getattr(dataset, "paths", None)
    if paths is not None:
        rows = getattr(dataset, "_rows", None)
        return [paths[int(r)] for r in rows] if rows is not None else list(paths)
    return [str(f) for f in getattr(dataset, "source_files", None) or []]


def files_fingerprint(files: Sequence[str]) -> str | None:
    """SHA-256 over each file's path, size and modification time in nanoseconds (one ``stat`` per
    file, no reading): a file changed or replaced in place changes it. None without files."""
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            digest.update(f"{path}\0missing\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def cache_key(checkpoint_sha256: str, spec: dict, transform: dict, dtype: str, precision: str = "float32",
              foreign: dict | None = None, files: str | None = None) -> str:
    """sha256 of the canonical JSON of what determines the features (the forward pass's
    ``precision`` included: bf16 and float32 features never share an entry; for a checkpoint of
    another codebase also the ``foreign`` options it is converted with; ``files``, the
    :func:`files_fingerprint` of the dataset's files, so that a changed file misses the cache)."""
    payload = {"format": CACHE_FORMAT, "checkpoint": checkpoint_sha256, "dataset": spec,
               "transform": transform, "dtype": dtype, "precision": precision}
    if foreign is not None:
        payload["foreign"] = foreign
    if files is not None:
        payload["files"] = files
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class FeatureCache:
    """Feature cache under ``cache_dir``: one ``<key>/`` directory per entry, see the module doc."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir).expanduser()

    def entry_path(self, key: str) -> Path:
        return self.cache_dir / key

    def stored_layers(self, key: str) -> list[str]:
        """Layers a complete entry holds (empty when the entry does not exist)."""
        entry = self.entry_path(key)
        return list(_read_meta(entry)["layers"]) if entry.is_dir() else []

    def _usable_layers(self, key: str, layers: Sequence[str], labels: np.ndarray | None) -> list[str]:
        """Layers of the entry ``key`` whose files check out (empty when there is none); a damaged
        or stale entry is removed with a warning naming the file, so it is rebuilt."""
        entry = self.entry_path(key)
        if not entry.is_dir():
            return []
        meta, problem = check_entry(entry, layers)
        if problem is None and labels is not None and not np.array_equal(np.load(entry / "labels.npy"), labels):
            problem = f"{entry / 'labels.npy'} no longer matches the dataset's labels (its files changed on disk)"
        if problem is None:
            return list(meta["layers"])
        warnings.warn(f"feature cache: {problem}; rebuilding the entry {entry}", stacklevel=3)
        self._discard(entry)
        return []

    def _discard(self, entry: Path) -> None:
        """Remove an entry: renamed to a temporary first, so no process sees it half-deleted."""
        gone = entry.with_name(f"{temp_prefix(entry.name[:16])}{secrets.token_hex(4)}.tmp")
        try:
            os.rename(entry, gone)
        except FileNotFoundError:  # another process discarded it meanwhile
            return
        shutil.rmtree(gone, ignore_errors=True)

    def get(self, checkpoint_path: str | Path, dataset_spec: dict, layers: str | Sequence[str], *,
            device: str | torch.device = "auto", batch_size: int = 256, num_workers: int = 0,
            float16: bool = False, precision: str = "float32", show_progress: bool = True,
            num_classes: int | None = None, foreign: dict | None = None,
            class_names: Sequence[str] | None = None) -> FeatureSet:
        """Features of ``layers`` for the dataset ``data.build_dataset(**dataset_spec)`` under the
        model in ``checkpoint_path`` (a checkpoint of another codebase: converted with the
        ``foreign`` options, see :func:`core.checkpoint.load_checkpoint`), its forward pass in
        ``precision`` (see :func:`extract`). When a layer is not cached yet, one forward pass extracts it
        together with every other layer of the model the entry lacks, so any later request is a hit.
        The model is rebuilt from the checkpoint only when something must be extracted.
        ``num_classes``, when given, must be the dataset's class count, and ``class_names`` its
        class names in label order (checked before anything runs)."""
        import data

        if precision not in PRECISIONS:
            raise UserError(f"unknown extraction precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        tidy(self.cache_dir)  # extraction folders of killed processes
        names = _as_layer_list(layers)
        for name in names:
            layer_file(name)
        checkpoint_path = Path(checkpoint_path)
        if not checkpoint_path.is_file():
            raise UserError(f"checkpoint {checkpoint_path} does not exist; pass the .pth file written by pretrain.py")
        checkpoint_sha = ckpt_io.file_hash(checkpoint_path)
        spec = normalize_spec(dataset_spec)
        dataset = data.build_dataset(**spec, augment=False)
        if len(dataset) == 0:
            raise UserError(f"dataset {spec['name']} ({spec['split']}) is empty; check its root/classes")
        if num_classes is not None and dataset.num_classes != num_classes:
            raise UserError(f"class-count mismatch: {checkpoint_path} was trained on {num_classes} classes but "
                            f"{spec['name']} ({spec['split']}) has {dataset.num_classes}; evaluate on the "
                            f"dataset/classes it was trained on")
        if class_names is not None and list(dataset.classes) != list(class_names):
            wrong = next((i for i, (a, b) in enumerate(zip(dataset.classes, class_names)) if a != b),
                         min(len(dataset.classes), len(class_names)))
            here = dataset.classes[wrong] if wrong < len(dataset.classes) else None
            trained = class_names[wrong] if wrong < len(class_names) else None
            raise UserError(f"class mismatch: {checkpoint_path} was trained on other {spec['name']} classes (label "
                            f"{wrong} is {here!r} here but was {trained!r} in training); evaluate on the classes it "
                            f"was trained on (the dataset and classes of its pretraining config)")
        dtype = "float16" if float16 else "float32"
        transform = describe_transform(dataset, spec.get("image_size"))
        fingerprint = files_fingerprint(dataset_files(dataset))
        key = cache_key(checkpoint_sha, spec, transform, dtype, precision, foreign, fingerprint)

        labels = np.asarray(dataset.targets, dtype=np.int64) if hasattr(dataset, "targets") else None
        stored = self._usable_layers(key, names, labels)
        missing = [n for n in names if n not in stored]
        if missing:
            meta = {"format": CACHE_FORMAT,
                    "checkpoint": {"path": str(checkpoint_path.resolve()), "sha256": checkpoint_sha,
                                   **({"foreign": foreign} if foreign is not None else {})},
                    "dataset": spec, "dataset_files": fingerprint, "transform": transform, "dtype": dtype,
                    "precision": precision,
                    "device": str(resolve_device(device)), "num_samples": len(dataset),
                    "num_classes": int(dataset.num_classes), "classes": list(getattr(dataset, "classes", [])),
                    "layers": {}}
            self._extract_into(key, meta, dataset, missing, stored, checkpoint_path, resolve_device(device),
                               batch_size, num_workers, show_progress, foreign)
        return FeatureSet(self.entry_path(key), names)

    def _extract_into(self, key: str, meta: dict, dataset, layers: list[str], stored: list[str],
                      checkpoint_path: Path, device: torch.device, batch_size: int, num_workers: int,
                      show_progress: bool, foreign: dict | None = None) -> None:
        """Run the model once over ``dataset`` for ``layers`` (named layers or module paths) and every
        other named layer the entry lacks (pooled features are small next to the forward pass, and
        every evaluator then hits the cache). Each layer's meta records the module path it hooked."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = make_temp_dir(self.cache_dir, key[:16])
        except OSError as exc:
            raise os_error(exc, self.cache_dir, "write the feature cache in") from None
        try:
            model = ckpt_io.model_from_checkpoint(checkpoint_path, device=device, foreign=foreign)
            layers = list(dict.fromkeys(layers + [n for n in model.named_layers() if n not in stored]))
            sink = MemmapSink(tmp, len(dataset), meta["dtype"])
            extract(model, dataset, layers, device=device, batch_size=batch_size, num_workers=num_workers,
                    show_progress=show_progress, sink=sink, float16=meta["dtype"] == "float16",
                    precision=meta["precision"])
            paths = describe_layers(model, layers)
            meta["layers"] = {name: {"dim": sink.dims[name], "module": paths[name]} for name in layers}
            meta["files"] = {name: _file_record(tmp / name) for name in ["labels.npy", *map(layer_file, layers)]}
            self._publish(tmp, self.entry_path(key), meta)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _check_labels(entry: Path, labels: np.ndarray) -> None:
        """The dataset must still have the labels the entry was made from (its files may change on disk)."""
        if not np.array_equal(np.load(entry / "labels.npy"), labels):
            raise UserError(f"the dataset's labels differ from those in feature cache entry {entry} "
                            f"(its files changed on disk); delete that directory and run again")

    @staticmethod
    def _publish(tmp: Path, entry: Path, meta: dict) -> None:
        """Make the layers extracted into ``tmp`` part of ``entry``: a new entry is the renamed
        ``tmp`` (meta.json included); an existing one receives the layer files first and its
        meta.json last, so a layer counts only once its file is complete. A layer the entry
        already holds (another process published it meanwhile) is kept, never replaced. The files
        written here count as verified for this process."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if not entry.exists():
            meta = {**meta, "created": now, "updated": now}
            atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2) + "\n")
            try:
                os.rename(tmp, entry)
                for name in meta["files"]:
                    _remember(entry / name)
                return
            except OSError:  # another process published this key meanwhile: merge into it
                if not entry.is_dir():
                    raise
        stored = _read_meta(entry)
        FeatureCache._check_labels(entry, np.load(tmp / "labels.npy"))
        added = {name: info for name, info in meta["layers"].items() if name not in stored["layers"]}
        for name in added:
            os.replace(tmp / layer_file(name), entry / layer_file(name))
            _remember(entry / layer_file(name))
        stored["layers"] = {**stored["layers"], **added}
        stored["files"] = {**stored.get("files", {}), **{layer_file(n): meta["files"][layer_file(n)] for n in added}}
        stored["updated"] = now
        atomic_write_text(entry / "meta.json", json.dumps(stored, indent=2) + "\n")


def get_features(checkpoint_path: str | Path, dataset_spec: dict, layers: str | Sequence[str], *,
                 cache_dir: str | Path, device: str | torch.device = "auto", batch_size: int = 256,
                 num_workers: int = 0, float16: bool = False, precision: str = "float32", show_progress: bool = True,
                 num_classes: int | None = None, foreign: dict | None = None,
                 class_names: Sequence[str] | None = None) -> FeatureSet:
    """:meth:`FeatureCache.get` on ``FeatureCache(cache_dir)``."""
    return FeatureCache(cache_dir).get(checkpoint_path, dataset_spec, layers, device=device, batch_size=batch_size,
                                       num_workers=num_workers, float16=float16, precision=precision,
                                       show_progress=show_progress,
                                       num_classes=num_classes, foreign=foreign, class_names=class_names)
