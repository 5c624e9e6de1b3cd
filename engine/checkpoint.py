"""Checkpoints: one file, written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint records everything needed to rebuild the model and to continue training exactly
where it stopped: the model's build arguments and weights, the optimizer and scheduler states,
the epoch count, the resolved configuration, the best accuracy so far and the RNG states.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import UserError
from engine.io import atomic_torch_save

FORMAT_VERSION = 1
_REQUIRED = ("format", "model_kwargs", "state_dict", "epoch")


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


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, epoch: int, config: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None,
                    best_acc1: float | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (temp file + rename)."""
    net = unwrap(model)
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
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing, truncated or foreign file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass the .pth file written by pretrain.py "
                        f"(its --save_dir/--ckpt_file)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle with foreign objects, not a torch file
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} is corrupt or not an nc-ood checkpoint ({reason}); "
                        f"re-run pretraining or point to another file") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _REQUIRED):
        raise UserError(f"checkpoint {path} is not an nc-ood checkpoint (missing "
                        f"{[k for k in _REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]}); "
                        f"use a file written by pretrain.py")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path, device: str | torch.device = "cpu",
                          num_classes: int | None = None) -> torch.nn.Module:
    """Rebuild the model a checkpoint describes, load its weights, and put it in eval mode.
    ``num_classes``, when given, must match the checkpoint's (a clear error otherwise)."""
    from models import build_model

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    kwargs = dict(ckpt["model_kwargs"])
    if num_classes is not None and kwargs["num_classes"] != num_classes:
        raise UserError(f"class-count mismatch: the checkpoint was trained on {kwargs['num_classes']} classes "
                        f"but the data has {num_classes}; pass the dataset/classes the model was trained on")
    model = build_model(**kwargs)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content (what feature-cache keys use for a checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
