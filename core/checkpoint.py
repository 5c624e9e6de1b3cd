"""Checkpoints: one file, written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint records everything needed to rebuild the model and to continue training exactly
where it stopped: the model's build arguments and weights, the optimizer and scheduler states,
the epoch count, the resolved configuration, the best accuracy so far and the RNG states.

Checkpoints of other codebases (the official NC-OOD scripts, torchvision, timm) load through the
same functions when given ``foreign`` options: :mod:`models.foreign` converts them on load to
one of our models, and :func:`convert_checkpoint` writes the result as a checkpoint of ours.
"""
from __future__ import annotations

import argparse
import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import FileSystemError, UserError
from core.io import atomic_torch_save

FORMAT_VERSION = 1
_REQUIRED = ("format", "model_kwargs", "state_dict", "epoch")
# The official NC-OOD training scripts store their argparse flags in every checkpoint.
SAFE_GLOBALS = [argparse.Namespace]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel (or torch.compile) wrapper."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states as weights_only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def nonfinite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` holding a NaN or an infinity (one
    device sync for all of them; the names are looked up only when one is found)."""
    floats = [(k, v) for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not floats:
        return []
    finite = [torch.isfinite(v).all() for _, v in floats]
    try:
        flags = torch.stack(finite).cpu()
    except RuntimeError:  # tensors on several devices
        flags = torch.stack([f.cpu() for f in finite])
    if bool(flags.all()):
        return []
    return [k for (k, _), ok in zip(floats, flags.tolist()) if not ok]


def name_tensors(names: list[str]) -> str:
    """``first`` or ``first (and N more tensors)``: the tensors :func:`nonfinite_tensors` found, in a message."""
    return names[0] + (f" (and {len(names) - 1} more tensors)" if len(names) > 1 else "")


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, epoch: int, config: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None,
                    best_acc1: float | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (temp file + rename); a model with a NaN or infinite
    parameter or buffer is refused (UserError), so the file at ``path`` keeps its last good state."""
    net = unwrap(model)
    bad = nonfinite_tensors(net.state_dict())
    if bad:
        raise UserError(f"refusing to write {path}: {name_tensors(bad)} holds non-finite values")
    state = {
        "format": FORMAT_VERSION,
        "arch": net.build_kwargs["arch"],
        "model_kwargs": dict(net.build_kwargs),
        "state_dict": net.state_dict(),
        "epoch": int(epoch),
        "config": dict(config),
        "best_acc1": best_acc1,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
    }
    if extra:
        state.update(extra)
    try:
        return atomic_torch_save(state, path)
    except FileSystemError as exc:  # a full disk: the file at path is the previous one, or none
        kept = f"{Path(path).name} keeps its previous epoch" if Path(path).exists() else f"{Path(path).name} was not written"
        raise FileSystemError(f"{exc}; {kept}") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    foreign: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint safely; a missing, truncated or foreign file is a one-line UserError.

    With ``foreign`` (the options of :func:`models.foreign.convert`, None values inferred) a
    checkpoint of another codebase is converted on load instead: the dict then has our keys
    (``model_kwargs``, ``state_dict``, ``epoch`` as the file records it or 0, no optimizer) and
    ``foreign = {"layout", "summary", "options"}``. An nc-ood checkpoint must then agree with
    every option given (they describe foreign files)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass the .pth file written by pretrain.py "
                        f"(its --save_dir/--ckpt_file)")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle with foreign objects, not a torch file
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} is corrupt or not an nc-ood checkpoint ({reason}); "
                        f"re-run pretraining or point to another file") from None
    ours = isinstance(ckpt, dict) and all(k in ckpt for k in _REQUIRED)
    if foreign is not None:
        return _check_options(ckpt, foreign, path) if ours else _convert(ckpt, foreign, path)
    if not ours:
        raise UserError(f"checkpoint {path} is not an nc-ood checkpoint (missing "
                        f"{[k for k in _REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]}); "
                        f"use a file written by pretrain.py, or convert one of the official NC-OOD code, "
                        f"torchvision or timm with scripts/convert_official.sh")
    return ckpt


def _convert(obj: Any, options: dict[str, Any], path: Path) -> dict[str, Any]:
    from models.foreign import convert

    try:
        converted = convert(obj, **options)
    except ValueError as exc:
        raise UserError(f"checkpoint {path} {exc}") from None
    kwargs = converted.model_kwargs
    return {"format": FORMAT_VERSION, "arch": kwargs["arch"], "model_kwargs": kwargs,
            "state_dict": converted.state_dict, "epoch": converted.epoch or 0, "config": {}, "best_acc1": None,
            "optimizer": None, "scheduler": None, "history": [],
            "foreign": {"layout": converted.layout, "summary": converted.summary(), "options": dict(options)}}


def _check_options(ckpt: dict[str, Any], options: dict[str, Any], path: Path) -> dict[str, Any]:
    from models import build_model

    with torch.device("meta"):  # the build arguments with the defaults of those newer than the file
        kwargs = build_model(**ckpt["model_kwargs"]).build_kwargs
    saved = {**kwargs, **kwargs["nc_control"]}
    for key, value in options.items():
        if key != "img_size" and value is not None and saved.get(key) != value:
            raise UserError(f"checkpoint {path} is an nc-ood checkpoint with {key}={saved.get(key)!r}; --{key} "
                            f"describes checkpoints of other codebases, drop it")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path, device: str | torch.device = "cpu",
                          num_classes: int | None = None, foreign: dict[str, Any] | None = None) -> torch.nn.Module:
    """Rebuild the model a checkpoint describes, load its weights, and put it in eval mode.
    ``num_classes``, when given, must match the checkpoint's (a clear error otherwise);
    ``foreign``: see :func:`load_checkpoint`."""
    from models import build_model

    source = "the checkpoint"
    if not isinstance(ckpt, dict):
        source = f"checkpoint {ckpt}"
        ckpt = load_checkpoint(ckpt, foreign=foreign)
    kwargs = dict(ckpt["model_kwargs"])
    if num_classes is not None and kwargs["num_classes"] != num_classes:
        raise UserError(f"class-count mismatch: the checkpoint was trained on {kwargs['num_classes']} classes "
                        f"but the data has {num_classes}; pass the dataset/classes the model was trained on")
    model = build_model(**kwargs)
    load_weights(model, ckpt["state_dict"], source)
    return model.to(device).eval()


def convert_checkpoint(source: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """Write the checkpoint of another codebase ``source`` as an nc-ood checkpoint ``out`` (weights
    only, epoch 0: start a run from it with ``pretrain.py --init_from``) and return the record of
    its origin stored in it as ``converted_from`` (plus the ``model_kwargs``). ``options``: see
    :func:`models.foreign.convert`.
    An existing ``out`` is never overwritten."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} exists; a converted checkpoint is never overwritten: delete it or pass another --out")
    ckpt = load_checkpoint(source, foreign=options)
    if "foreign" not in ckpt:
        raise UserError(f"{source} is already an nc-ood checkpoint; use it as it is")
    model = model_from_checkpoint(ckpt)
    record = {**ckpt["foreign"], "path": str(Path(source).resolve()), "sha256": file_hash(source),
              "epoch": ckpt["epoch"]}
    save_checkpoint(out, model=model, epoch=0, config={}, extra={"converted_from": record})
    return {**record, "model_kwargs": ckpt["model_kwargs"]}


def load_weights(model: torch.nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """``model.load_state_dict(state_dict)`` (strict) with a one-line UserError naming the first
    missing, unexpected and mis-shaped entries when the weights do not fit the model."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {list(state_dict[k].shape)} in the file, {list(v.shape)} in the model" for k, v in own.items()
              if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != v.shape]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape of", shapes)):
        if keys:
            problems.append(f"{what} {', '.join(keys[:3])}" + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""))
    if problems:
        raise UserError(f"{source}: the weights do not fit the model it describes ({'; '.join(problems)}); the "
                        f"file is damaged or its recorded model (arch, width, nc_control, ...) is not the one trained")
    model.load_state_dict(state_dict)


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content (what feature-cache keys use for a checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_weights_finite(state_dict: dict[str, Any], source: str) -> None:
    """A one-line UserError when the weights ``source`` (e.g. ``checkpoint <path>``) holds have a
    NaN or an infinity: the checkpoint is damaged or its training diverged, whatever is done with it next."""
    bad = nonfinite_tensors(state_dict)
    if bad:
        raise UserError(f"{source} holds non-finite values in {name_tensors(bad)}: the checkpoint is damaged or its "
                        f"training diverged; use an earlier checkpoint of the run or retrain it")
