"""What a pretraining run checks so that it never loses or corrupts a result.

Before anything is written:

- :func:`check_values`: every number in range (``--epochs`` >= 1, ``-b`` >= 1 and at least one
  sample per process, 0 <= ``--label_smoothing`` < 1, ``--warmup_epochs`` >= 0, ...); one line each.
- :func:`check_run_folder`: a fresh run refuses a ``--save_dir`` whose ``--ckpt_file`` (or its
  ``best_`` twin) already exists, naming ``--resume`` and ``--overwrite``; ``--overwrite``
  replaces that run on purpose (:func:`clear_run`).
- :func:`plan_resume`: a ``--resume`` checkpoint must hold an optimizer and scheduler state (a
  ``best_`` checkpoint holds weights only) and must have been trained with the flags given now.
  The schedule's length and shape (``RESCHEDULABLE``: ``--epochs``, ``--warmup_epochs``,
  ``--warmup_start_factor``, ``--milestones``, ``--gamma``, and ``--warmup_lr``, ``--min_lr``,
  ``--schedule_lag`` of ``--schedule cosine_timm``) may change: the run then continues
  on the new schedule from the epoch it reached (:func:`continue_schedule`), i.e. each later
  epoch gets the learning rate an uninterrupted run with the new flags would have had at that
  epoch (the earlier epochs stay what they were). Operational flags (``FREE_ON_RESUME``: paths,
  workers, device, monitor) may change freely. Any other change (``--lr``, ``--wd``, ``-b``,
  ``--seed``, the data, ...) has no sound continuation and is refused in one line naming the
  flag and both values. A resumed run logs ``resumed`` (from which epoch, what changed) in its
  first log record, keeps the list in the checkpoint (``resumes``) and as comments atop
  ``<name>.config.yaml``.

:func:`warn_validation_on_training_images` warns when the per-epoch validation set is the training
images (an ``imagefolder`` without split folders).

Before each checkpoint is written, :func:`check_finite` refuses weights or buffers with a NaN
or an infinity (e.g. a BatchNorm ``running_var`` after a diverging step), so the last good
checkpoint stays in place.
"""
from __future__ import annotations

import math
import warnings
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from core import distributed as D
from core.checkpoint import name_tensors, nonfinite_tensors, unwrap
from core.errors import UserError
from core.io import watch_writes
from core.lock import at_release, hold

FREE_ON_RESUME = frozenset({"resume", "overwrite", "save_dir", "ckpt_file", "expt_name", "workers", "device", "data",
                            "init_from", "monitor_ood", "monitor_max_per_class", "monitor_layers", "config",
                            "logger"})
RESCHEDULABLE = frozenset({"epochs", "warmup_epochs", "warmup_start_factor", "milestones", "gamma", "warmup_lr", "min_lr",
                           "schedule_lag"})


def _rule(ok: bool, flag: str, requirement: str, value: Any) -> None:
    if not ok:
        raise UserError(f"--{flag} must be {requirement}, got {value!r}")


def check_values(cfg: Namespace, world_size: int = 1) -> None:
    """One-line errors for values outside their range (types are checked by core.config)."""
    _rule(cfg.epochs >= 1, "epochs", "at least 1", cfg.epochs)
    _rule(cfg.batch_size >= 1, "batch_size (-b)", "at least 1", cfg.batch_size)
    _rule(cfg.batch_size >= world_size, "batch_size (-b)", f"at least the {world_size} processes (it is the global "
          "batch, divided over them)", cfg.batch_size)
    _rule(0.0 <= cfg.label_smoothing < 1.0, "label_smoothing", "in [0, 1)", cfg.label_smoothing)
    _rule(cfg.warmup_epochs >= 0, "warmup_epochs", "at least 0", cfg.warmup_epochs)
    _rule(0.0 < cfg.warmup_start_factor <= 1.0, "warmup_start_factor", "in (0, 1]", cfg.warmup_start_factor)
    _rule(cfg.lr >= 0, "lr", "at least 0", cfg.lr)
    _rule(cfg.wd >= 0, "wd", "at least 0", cfg.wd)
    _rule(cfg.momentum >= 0, "momentum", "at least 0", cfg.momentum)
    _rule(cfg.workers >= 0, "workers (-j)", "at least 0", cfg.workers)
    _rule(cfg.num_classes >= 2, "num_classes", "at least 2", cfg.num_classes)
    _rule(cfg.image_size >= 1, "image_size", "at least 1", cfg.image_size)
    _rule(cfg.width > 0, "width", "positive", cfg.width)
    _rule(0.0 <= cfg.drop_path < 1.0, "drop_path", "in [0, 1)", cfg.drop_path)
    _rule(cfg.spectral_norm >= 0, "spectral_norm", "at least 0 (0 = off)", cfg.spectral_norm)
    for key in ("max_per_class", "monitor_max_per_class"):
        value = getattr(cfg, key)
        _rule(value is None or value >= 1, key, "at least 1 (or none: all)", value)
    name = cfg.ckpt_file
    _rule(bool(name) and name == Path(name).name and name not in (".", "..") and name == name.strip(), "ckpt_file",
          "a file name such as model.pth (the run's files in --save_dir are named after it)", name)
    searched = cfg.batch_size if cfg.entropy_batch == "global" else max(1, cfg.batch_size // world_size)
    if cfg.loss == "ce" and cfg.alpha > 0 and searched < 2:
        raise UserError(f"--alpha {cfg.alpha:g} needs batches of at least 2 samples (the entropy term pairs each sample "
                        f"with its nearest other sample in the batch), but -b {cfg.batch_size} gives {searched}; "
                        f"pass a larger -b, or --alpha 0")
    check_model_flags(cfg)


def check_model_flags(cfg: Namespace) -> None:
    """Flags that would build another model than the checkpoint then records, refused.

    - One projector width without the other: ``NCConfig`` builds a projector only when both are
      set, so ``--output_dim 8 --hidden_mlp 0`` would train the baseline while the checkpoint
      records ``output_dim 8``.
    - A fixed ETF projector narrower than the class count: its weights are the simplex-ETF
      formula ``sqrt(c/(c-1)) (I - 11^T/c)`` for c = ``--output_dim``, a frame of c vertices whose
      rank is c - 1. The K class means form a simplex ETF only in K - 1 dimensions, so for K > c the
      projector is not a simplex ETF for those classes (the method's premise), whatever it learns
      around it. ``--projector learnable`` or ``random`` make no such claim and are not checked.
    """
    if (cfg.output_dim > 0) != (cfg.hidden_mlp > 0):
        given, missing = ("output_dim", "hidden_mlp") if cfg.output_dim > 0 else ("hidden_mlp", "output_dim")
        raise UserError(f"--{given} {getattr(cfg, given)} with --{missing} 0 builds no projector: the run would train "
                        f"the baseline while its checkpoint records {given}={getattr(cfg, given)}; pass both widths "
                        f"for a projector (e.g. --output_dim 512 --hidden_mlp 2048) or neither for the baseline")
    if cfg.output_dim > 0 and cfg.projector == "etf" and cfg.output_dim < cfg.num_classes:
        raise UserError(f"--output_dim {cfg.output_dim} is below the {cfg.num_classes} classes: the fixed ETF "
                        f"projector is a simplex of {cfg.output_dim} vertices (rank {cfg.output_dim - 1}), while "
                        f"{cfg.num_classes} class means need {cfg.num_classes - 1} dimensions to form a simplex ETF; "
                        f"pass --output_dim {cfg.num_classes} or more (the method: the encoder's width)")


def warn_validation_on_training_images(cfg: Namespace, val_set) -> None:
    """The per-epoch 'val top-1' of a dataset whose test split is its training images (an
    imagefolder without test/ or val/) would measure memorization: say so."""
    if getattr(val_set, "test_is_train", False):
        warnings.warn(f"{cfg.dataset} at {cfg.data} has no test/ or val/ folder, so 'val top-1' is measured on the "
                      "training images; add a test/ folder, or pass --val_split 0.1 to hold out part of the training "
                      "set", stacklevel=2)


def run_files(paths: dict[str, Path]) -> list[Path]:
    """The checkpoints of the run ``paths`` describes that exist."""
    return [paths[k] for k in ("last", "best") if paths[k].exists()]


def check_run_folder(cfg: Namespace, paths: dict[str, Path]) -> None:
    """A run writes only over its own files: a fresh run (or one resumed from elsewhere) into a
    folder holding a run of the same ``--ckpt_file`` needs ``--overwrite``."""
    existing = run_files(paths)
    if not existing or cfg.overwrite:
        return
    if cfg.resume and Path(cfg.resume).resolve() in {p.resolve() for p in existing}:
        return
    what = f"--resume {cfg.resume} would write over" if cfg.resume else "a new run would replace"
    if paths["last"].exists():
        go_on = f"continue it with --resume {paths['last']}, write elsewhere with --save_dir or --ckpt_file"
    else:  # only the best checkpoint (weights only) survived, e.g. a full disk while writing the last one
        go_on = (f"it has no checkpoint to resume ({paths['last'].name} is missing, {paths['best'].name} holds weights "
                 f"only): start a new run from its weights with --init_from {paths['best']} and another --save_dir "
                 f"or --ckpt_file")
    raise UserError(f"{paths['last'].parent} already holds a run ({', '.join(p.name for p in existing)}) that {what}; "
                    f"{go_on}, or pass --overwrite to replace it")


def hold_run_folder(cfg: Namespace, paths: dict[str, Path], info: D.DistInfo) -> None:
    """Hold the run's lock in ``--save_dir`` from its first moment until the command ends (rank 0
    only, :func:`core.lock.hold`; every process stops when it cannot): a second run of the same
    ``--ckpt_file`` there is refused, naming this one. A fresh run that then fails before any
    checkpoint exists removes the files it wrote (its config and log), so a refused or failed start
    leaves nothing half-written."""
    folder, lock, refused = paths["last"].parent, None, None
    if info.is_main:
        try:
            lock = hold(folder, cfg.ckpt_file, what=f"pretraining run of {cfg.ckpt_file}", flag="--save_dir",
                        elsewhere="pass another --save_dir or --ckpt_file")
        except UserError as exc:
            refused = exc
    if D.all_reduce_sum([float(refused is not None)], info)[0]:
        raise refused or UserError(f"rank 0 could not hold --save_dir {folder} (its error says why)")
    if lock is None or cfg.resume:
        return
    written: list[Path] = []
    stop = watch_writes(folder, written.append)

    def undo(failed: bool) -> None:
        stop()
        if failed and not any(paths[k].exists() for k in ("last", "best")):
            for path in written:
                path.unlink(missing_ok=True)
    at_release(undo)


def clear_run(cfg: Namespace, paths: dict[str, Path]) -> None:
    """``--overwrite``: remove the run being replaced (its checkpoints), so the folder never mixes two runs."""
    if not cfg.overwrite:
        return
    resumed = Path(cfg.resume).resolve() if cfg.resume else None
    removed = [p for p in run_files(paths) if p.resolve() != resumed]
    for path in removed:
        path.unlink()
    if removed:
        print(f"--overwrite: removed the previous run's {', '.join(p.name for p in removed)} from {paths['last'].parent}",
              flush=True)


@dataclass
class ResumePlan:
    """What a ``--resume`` continues: the epochs done, the schedule changes honoured, the resume history."""
    checkpoint: str
    epochs_done: int
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    resumes: list[dict] = field(default_factory=list)  # every resume of this run, this one last

    @property
    def schedule_changed(self) -> bool:
        return bool(self.changed)

    def record(self) -> dict:
        """This resume as logged: the epoch it continued from and each changed flag as [old, new]."""
        out: dict[str, Any] = {"from_epoch": self.epochs_done, "checkpoint": self.checkpoint}
        if self.changed:
            out["changed"] = {k: [old, new] for k, (old, new) in self.changed.items()}
        return out

    def describe(self) -> str:
        changes = ", ".join(f"--{k} {old!r} -> {new!r}" for k, (old, new) in self.changed.items())
        return f"resuming {self.checkpoint} after epoch {self.epochs_done}" + (
            f" on the changed schedule ({changes})" if changes else "")

    def config_comments(self) -> list[str]:
        lines = []
        for r in self.resumes:
            changed = "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in r.get("changed", {}).items())
            lines.append(f"resumed after epoch {r['from_epoch']} from {r['checkpoint']}"
                         + (f" with {changed}" if changed else ""))
        return lines


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def plan_resume(cfg: Namespace, ckpt: dict, paths: dict[str, Path]) -> ResumePlan:
    """Check that ``ckpt`` (loaded from ``--resume``) can continue under ``cfg``; see the module doc."""
    source = cfg.resume
    if ckpt.get("optimizer") is None or ckpt.get("scheduler") is None:
        last = Path(source).with_name(Path(source).name.removeprefix("best_"))
        hint = last if last.name != Path(source).name else paths["last"]
        raise UserError(f"--resume {source} holds weights only (no optimizer or scheduler state, as a best_ checkpoint), "
                        f"so training cannot continue from it exactly; resume from the last epoch's {hint}, or start a "
                        f"new run from these weights with --init_from {source}")
    saved = ckpt.get("config") or {}
    given = vars(cfg)
    differ = {k: (saved[k], given[k]) for k in saved
              if k in given and k not in FREE_ON_RESUME and not _same(saved[k], given[k])}
    refused = {k: v for k, v in differ.items() if k not in RESCHEDULABLE}
    if refused:
        shown = ", ".join(f"--{k} {old!r} (now {new!r})" for k, (old, new) in refused.items())
        raise UserError(f"--resume {source} was trained with {shown}; a resumed run keeps its recipe (only "
                        f"{', '.join('--' + k for k in sorted(RESCHEDULABLE))} may change), so pass the saved values "
                        f"(its {paths['config'].name} works as --config) or start a new run")
    done = int(ckpt["epoch"])
    if cfg.epochs < done:
        raise UserError(f"--resume {source} has already trained {done} epochs, more than --epochs {cfg.epochs}; "
                        f"pass --epochs {done} or more")
    plan = ResumePlan(str(source), done, differ)
    plan.resumes = [*ckpt.get("resumes", []), plan.record()]
    return plan


def continue_schedule(optimizer: torch.optim.Optimizer, make_scheduler: Callable, step: Callable, epochs_done: int):
    """A scheduler for the new flags, built from the schedule's start (the base lr of each group)
    and advanced with ``step(scheduler, epochs_done_so_far)`` once per epoch already trained, as
    the training loop advances it; the optimizer's groups then hold the lr the new schedule gives
    the next epoch."""
    for group in optimizer.param_groups:
        group["lr"] = group.get("initial_lr", group["lr"])
    scheduler = make_scheduler(optimizer)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": no training step is meant here
        warnings.simplefilter("ignore", UserWarning)
        for done in range(1, epochs_done + 1):
            step(scheduler, done)
    return scheduler


def check_finite(model: torch.nn.Module, epoch: int, paths: dict[str, Path], resumed_from: str | None = None) -> None:
    """Refuse to go on (and to write a checkpoint) when a parameter or buffer holds NaN or inf. The
    advice names what can be changed: a fresh run's recipe, or for a run resumed from a checkpoint
    (whose recipe is kept) that checkpoint and a new run."""
    bad = nonfinite_tensors(unwrap(model).state_dict())
    if bad:
        kept = (f"its checkpoint was not written ({paths['last']} keeps the last good epoch)" if paths["last"].exists()
                else "so no checkpoint was written")
        advice = ("lower --lr (or --alpha), add --warmup_epochs, or check the input data" if not resumed_from else
                  f"the run continued from {resumed_from} and keeps its recipe: resume from an earlier checkpoint of "
                  f"the run, or start a new run with a lower --lr (or --alpha) or more --warmup_epochs")
        raise UserError(f"epoch {epoch} left non-finite values in {name_tensors(bad)}; {kept}; {advice}")
