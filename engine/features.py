"""Layer-wise feature extraction (one forward pass per image) and its on-disk cache.

:func:`extract` hooks the requested layers and pools each output to one vector per image. A
layer is a named layer of ``model.named_layers()`` (``encoder``, ``last_conv``,
``projector_raw``, ...) or the dotted path of any module (``encoder.layer4.1.conv2``), one
mechanism for both (:func:`resolve_layers`):

- a conv map ``B x C x H x W`` -> global average pool, ``f_c = 1/(HW) sum_{h,w} x_{c,h,w}``;
- a token map ``B x N x D`` -> mean over the tokens after dropping the model's
  ``num_prefix_tokens`` leading ones (class/register tokens);
- a ``B x D`` output (encoder embedding, L2-normalized projection, logits) as it is.

Batches stream to a sink, so a dataset's features never need to sit in memory at once.

:class:`FeatureCache` keeps one directory per (checkpoint content, dataset, transform, storage
dtype, forward-pass precision) holding ``meta.json``, ``labels.npy`` and one ``<layer>.npy`` per layer (N x D; a dotted path
is its own file name, ``encoder.layer4.1.conv2.npy``). New layers are extracted into a
temporary directory and moved in only when complete, so an interrupted extraction never leaves
a layer that looks valid (and the next process removes the folder it left, see
:func:`engine.io.remove_stale_temps`). A miss extracts every named layer of the model (plus the
requested module paths) in that one pass (pooled features are small), so later requests are hits.

The cache trusts no file it did not check: ``meta.json`` records each file's size and SHA-256
when the entry is written. Every use checks the sizes (one ``stat`` per file); the checksum of
each file is verified once per process (a later use of the same unchanged file, same size,
mtime and inode, is not hashed again; hashing runs at several hundred MB/s, small next to the
forward pass that made the file). A missing, truncated or altered file, an unreadable
``meta.json`` or labels that no longer match the dataset make the entry stale: a warning names
the file and the entry is rebuilt (the cache holds derived data only). Entries written before
the records existed are checked by their ``.npy`` headers instead.
"""
from __future__ import annotations

import datetime
import difflib
import hashlib
import inspect
import json
import os
import re
import secrets
import shutil
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from engine import checkpoint as ckpt_io
from engine.distributed import pick_device
from engine.errors import UserError
from engine.io import atomic_write_text, make_temp_dir, temp_prefix, tidy
from engine.progress import progress

CACHE_FORMAT = 2          # bump when pooling or the file layout changes: every key changes with it
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}
#: Arithmetic of the forward pass: ``float32`` (the official evaluation's) or ``bfloat16`` autocast.
PRECISIONS = ("float32", "bfloat16")
_SAFE_LAYER = re.compile(r"^[A-Za-z0-9_.-]+$")
_VERIFIED: set[tuple[str, int, int, int]] = set()  # (path, size, mtime_ns, inode) whose checksum matched


# --------------------------------------------------------------------------- extraction

def _as_layer_list(layers: str | Sequence[str]) -> list[str]:
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("no layers requested; pass at least one name from model.named_layers()")
    return list(OrderedDict.fromkeys(names))


def module_paths(model: nn.Module) -> dict[int, str]:
    """``id(module) -> dotted path`` in ``model.named_modules()`` (the first path of a shared module)."""
    paths: dict[int, str] = {}
    for path, module in model.named_modules():
        paths.setdefault(id(module), path)
    return paths


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> OrderedDict[str, nn.Module]:
    """The modules to hook for ``layers``, in the requested order.

    A name is either a named layer of ``model.named_layers()`` (``encoder``, ``last_conv``,
    ``projector``, ...; these win) or the dotted path of any module in ``model.named_modules()``
    (``encoder.layer4.1.conv2``); either way the module's output is pooled by :func:`pool_output`.
    An unknown name is a UserError listing the named layers and the closest module paths."""
    named = model.named_layers()
    modules = dict(model.named_modules())
    names = _as_layer_list(layers)
    resolved: OrderedDict[str, nn.Module] = OrderedDict()
    for name in names:
        module = named.get(name, modules.get(name) if name else None)
        if module is None:
            close = difflib.get_close_matches(name, [*named, *[p for p in modules if p]], n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise UserError(f"unknown layer {name!r}{hint}; named layers: {', '.join(named)}; or the dotted "
                            f"path of any module of the model, e.g. {_example_path(model, named)}")
        resolved[name] = module
    return resolved


def _example_path(model: nn.Module, named: dict) -> str:
    paths = module_paths(model)
    module = named.get("last_conv", next(iter(named.values()), None))
    return paths.get(id(module), "encoder")


def describe_layers(model: nn.Module, layers: str | Sequence[str]) -> dict[str, str]:
    """``layer name -> the dotted module path it hooks`` (``last_conv -> encoder.layer4.1.conv2``)."""
    paths = module_paths(model)
    return {name: paths.get(id(module), name) for name, module in resolve_layers(model, layers).items()}


def num_prefix_tokens(model: nn.Module) -> int:
    """Leading non-patch tokens of a token model: ``model.num_prefix_tokens`` if set, else that of
    the first submodule defining it (a timm VisionTransformer), else 0."""
    value = getattr(model, "num_prefix_tokens", None)
    if value is None:
        value = next((m.num_prefix_tokens for m in model.modules()
                      if isinstance(getattr(m, "num_prefix_tokens", None), int)), 0)
    return int(value)


def pool_output(output: torch.Tensor, prefix_tokens: int = 0) -> torch.Tensor:
    """One float32 vector per sample (a new tensor): GAP of a 4-D map, token mean (after
    ``prefix_tokens``) of a 3-D map, a 2-D output as it is."""
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"a hooked layer returned {type(output).__name__}; feature layers must return a tensor")
    out = output.float()
    if out.dim() == 4:
        return out.mean(dim=(2, 3))
    if out.dim() == 3:
        return out[:, prefix_tokens:].mean(dim=1)
    if out.dim() == 2:  # a copy: later in-place ops of the forward pass must not reach it
        return out.clone() if out is output else out
    raise ValueError(f"cannot pool a layer output of shape {tuple(output.shape)}; expected 2-, 3- or 4-D")


class MemorySink:
    """Collects the batches in memory; after :meth:`close`, ``features[layer]`` is an N x D tensor
    and ``labels`` an N LongTensor. For small datasets and tests."""

    def __init__(self) -> None:
        self._parts: dict[str, list[torch.Tensor]] = {}
        self._labels: list[torch.Tensor] = []
        self.features: dict[str, torch.Tensor] = {}
        self.labels = torch.empty(0, dtype=torch.long)

    def write(self, start: int, features: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        for name, value in features.items():
            self._parts.setdefault(name, []).append(value)
        self._labels.append(labels)

    def close(self, num_samples: int) -> None:
        self.features = {name: torch.cat(parts) for name, parts in self._parts.items()}
        self.labels = torch.cat(self._labels) if self._labels else torch.empty(0, dtype=torch.long)


class MemmapSink:
    """Writes each layer into ``directory/<layer>.npy`` and the labels into ``labels.npy``
    (``np.lib.format.open_memmap``, shape fixed to ``num_samples`` rows, opened on the first batch
    once the width is known). ``dims`` maps each layer to its width after :meth:`close`."""

    def __init__(self, directory: str | Path, num_samples: int, dtype: str = "float32") -> None:
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
        self.directory = Path(directory)
        self.num_samples = int(num_samples)
        self.dtype = dtype
        self.dims: dict[str, int] = {}
        self._maps: dict[str, np.memmap] = {}
        self._labels = np.lib.format.open_memmap(self.directory / "labels.npy", mode="w+", dtype=np.int64,
                                                 shape=(self.num_samples,))

    def write(self, start: int, features: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        stop = start + len(labels)
        if stop > self.num_samples:
            raise RuntimeError(f"the loader yielded more than the {self.num_samples} samples the dataset announced")
        for name, value in features.items():
            if name not in self._maps:
                self._maps[name] = np.lib.format.open_memmap(
                    self.directory / layer_file(name), mode="w+", dtype=STORAGE_DTYPES[self.dtype],
                    shape=(self.num_samples, value.shape[1]))
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


def resolve_device(device: str | torch.device) -> torch.device:
    """``'auto'``: CUDA when present, else CPU; anything else as ``torch.device`` reads it."""
    return pick_device(device) if isinstance(device, str) else torch.device(device)


def _batches(loader_or_dataset: DataLoader | Dataset, batch_size: int, num_workers: int,
             device: torch.device) -> DataLoader:
    if isinstance(loader_or_dataset, DataLoader):
        return loader_or_dataset
    return DataLoader(loader_or_dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def extract(model: nn.Module, loader_or_dataset: DataLoader | Dataset, layers: str | Sequence[str], *,
            device: str | torch.device = "auto", batch_size: int = 256, num_workers: int = 0,
            show_progress: bool = True, sink=None, float16: bool = False, precision: str = "float32"):
    """Run ``model`` once over every image and hand each batch's pooled features of ``layers``
    (named layers or dotted module paths, see :func:`resolve_layers`) to ``sink`` (default: a
    :class:`MemorySink`), which is returned.

    A sink has ``write(start, features: dict[layer -> B x D CPU tensor], labels: B LongTensor)``,
    called in sample order, and ``close(num_samples)``. The model runs in eval mode under
    ``torch.inference_mode`` and is moved to ``device``. ``precision='float32'`` (the default, as the
    official evaluation) runs the forward pass in float32 on every device; ``'bfloat16'`` runs it
    under bf16 autocast (faster on GPUs, but bf16's 8-bit mantissa puts a floor under the
    within-class spread, hence under NC1, of collapsed features). Features are pooled in float32
    and handed over as float32 (float16 when ``float16``). A dataset is read in
    order with ``batch_size``/``num_workers``; a DataLoader is used as given. The hooks are removed
    and the model's train/eval mode restored even when the loop fails.
    """
    device = resolve_device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    modules = resolve_layers(model, layers)
    prefix = num_prefix_tokens(model)
    out_dtype = torch.float16 if float16 else torch.float32
    sink = MemorySink() if sink is None else sink
    loader = _batches(loader_or_dataset, batch_size, num_workers, device)

    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            if name in captured:
                raise UserError(f"layer {name!r} runs more than once per forward pass (a module called at several "
                                f"places); hook a module that runs once, e.g. its parent")
            captured[name] = pool_output(output, prefix).to(out_dtype)
        return hook

    was_training = model.training
    model.to(device).eval()
    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    seen = 0
    try:
        bar = progress(total=len(loader.dataset), show=show_progress, unit="img", desc="features", leave=False)
        with bar, torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                         enabled=precision == "bfloat16"):
            for images, targets in loader:
                images = images.to(device, non_blocking=True)
                if device.type == "cuda" and images.dim() == 4:
                    images = images.contiguous(memory_format=torch.channels_last)
                captured.clear()
                model(images)
                missing = [n for n in modules if n not in captured]
                if missing:
                    raise RuntimeError(f"layer(s) {', '.join(missing)} did not run in the model's forward pass")
                labels = torch.as_tensor(targets).long().reshape(-1).cpu()
                sink.write(seen, {n: captured[n].cpu() for n in modules}, labels)
                seen += len(labels)
                bar.update(len(labels))
        sink.close(seen)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sink


# --------------------------------------------------------------------------- cached feature sets

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


def cache_key(checkpoint_sha256: str, spec: dict, transform: dict, dtype: str, precision: str = "float32",
              foreign: dict | None = None) -> str:
    """sha256 of the canonical JSON of what determines the features (the forward pass's
    ``precision`` included: bf16 and float32 features never share an entry; for a checkpoint of
    another codebase also the ``foreign`` options it is converted with)."""
    payload = {"format": CACHE_FORMAT, "checkpoint": checkpoint_sha256, "dataset": spec,
               "transform": transform, "dtype": dtype, "precision": precision}
    if foreign is not None:
        payload["foreign"] = foreign
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
        ``foreign`` options, see :func:`engine.checkpoint.load_checkpoint`), its forward pass in
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
        key = cache_key(checkpoint_sha, spec, transform, dtype, precision, foreign)

        labels = np.asarray(dataset.targets, dtype=np.int64) if hasattr(dataset, "targets") else None
        stored = self._usable_layers(key, names, labels)
        missing = [n for n in names if n not in stored]
        if missing:
            meta = {"format": CACHE_FORMAT,
                    "checkpoint": {"path": str(checkpoint_path.resolve()), "sha256": checkpoint_sha,
                                   **({"foreign": foreign} if foreign is not None else {})},
                    "dataset": spec, "transform": transform, "dtype": dtype, "precision": precision,
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
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(self.cache_dir, key[:16])
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


__all__ = ["CACHE_FORMAT", "PRECISIONS", "FeatureCache", "FeatureSet", "MemmapSink", "MemorySink", "cache_key",
           "describe_layers", "describe_transform", "module_paths", "extract", "get_features", "layer_file", "normalize_spec", "num_prefix_tokens",
           "pool_output", "resolve_device", "resolve_layers"]
