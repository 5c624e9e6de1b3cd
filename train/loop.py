"""The pretraining loop: data -> model(encoder -> [projector -> L2] -> classifier)
-> CE(label smoothing) + alpha * entropy(encoder embedding) -> checkpoints.

``train(cfg)`` reads top to bottom: :func:`train.run.build_run` checks the flags and builds data,
model, monitor, the optimizer and schedule of :mod:`train.recipes` (default: AdamW with warmup +
cosine stepped per epoch, the official CNN recipe; ``configs/paper/vit.yaml`` the official ViT
one) and the loss of :mod:`nc_control.loss`; then per epoch one pass of :func:`train_one_epoch`,
top-1 validation, a JSON-lines log record and the last/best checkpoints. Each epoch reseeds every
RNG from (seed, epoch, rank), so ``--resume`` after an interruption reproduces an uninterrupted
run's weights exactly on the CPU.

The DDU recipe (Mukhoti et al., "Deep Deterministic Uncertainty", CVPR 2023; official code
omegafragger/DDU) and its L2-normalized variant (Haas, Yolland & Rabus, TMLR 2022) are flags of
the same loop: ``--optimizer sgd`` (momentum, no Nesterov), ``--schedule step`` (lr x ``gamma``
at each of ``milestones``), ``--val_split`` (a stratified held-out part of the training set
for the per-epoch top-1), the model flags ``--spectral_norm --activation --shortcut``, and for
the NC intervention ``--loss nc`` (:class:`nc_control.NCLoss`, no cross-entropy) from
``--init_from`` a checkpoint, with ``--monitor_ood`` logging NC and GMM detection each epoch
(:mod:`train.monitor`). ``--monitor_layers`` logs the collapse of named layers each epoch (NC1,
CDNV and VCI on a fixed, capped set of training images), the curves of the embedded study.
``--logger tensorboard wandb`` writes each epoch's record also to TensorBoard and/or Weights &
Biases (:mod:`core.tracking`; the JSON-lines log is always written), from rank 0 only.
"""
from __future__ import annotations

import json
import math
import time
from argparse import Namespace
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from core import distributed as D
from core.checkpoint import save_checkpoint
from core.config import save_config
from core.errors import UserError
from core.io import append_jsonl, atomic_write_text
from core.progress import progress
from core.tracking import Tracker, check_loggers
from train.guards import check_finite, clear_run
from train.recipes import learning_rate, step_scheduler
from train.run import (
    PretrainRun,
    build_run,
    epoch_seed,
    loss_function,
    make_loaders,
    seed_everything,
)


PRECISIONS = ("bfloat16", "float32")


def autocast_enabled(device: torch.device, precision: str = "bfloat16") -> bool:
    """Whether the training and validation passes run under bf16 autocast: on CUDA unless
    ``--precision float32`` (the official CNN pretraining's arithmetic); never on the CPU."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return device.type == "cuda" and precision == "bfloat16"


@dataclass
class EpochStats:
    loss: float
    ce_loss: float
    ent_loss: float
    acc1: float
    samples: int
    seconds: float


def train_one_epoch(model: torch.nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    loss_fn: Callable, device: torch.device, *, channels_last: bool = False,
                    desc: str = "train", show_progress: bool = True, sync_every: int = 25,
                    precision: str = "bfloat16") -> EpochStats:
    """One pass over ``loader``. Loss sums stay on the device and are read every ``sync_every``
    steps (and at the end), where a non-finite loss stops training with a clear error."""
    model.train()
    use_amp = autocast_enabled(device, precision)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, ce, ent, correct (sample-weighted)
    n, t0 = 0, time.perf_counter()
    bar = progress(loader, show=show_progress, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)
    for step, (images, targets) in enumerate(bar, 1):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(images, return_all=True)
        loss, ce, ent = loss_fn(out, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        b = targets.shape[0]
        n += b
        with torch.no_grad():
            correct = (out[2].argmax(1) == targets).sum()
            sums += torch.stack([loss.detach() * b, ce.detach() * b, ent.detach() * b, correct]).double()
        if step % sync_every == 0 or step == len(bar):
            values = sums.tolist()
            if not all(math.isfinite(v) for v in values):
                raise UserError(f"the loss became non-finite at {desc} step {step} (CE={ce.item():.4g}, "
                                f"entropy={ent.item():.4g}); lower --lr or --alpha, or check the input data")
            bar.set_postfix(loss=f"{values[0] / n:.4f}", acc=f"{values[3] / n:.3f}")
    values = sums.tolist()
    if n == 0:
        raise UserError("the training set is empty; check --data, --classes and --max_per_class")
    return EpochStats(values[0] / n, values[1] / n, values[2] / n, values[3] / n, n, time.perf_counter() - t0)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable, device: torch.device, info: D.DistInfo,
             channels_last: bool = False, precision: str = "bfloat16") -> float:
    """Top-1 accuracy over a (rank-sharded) loader, summed over processes."""
    model.eval()
    correct = total = 0
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_enabled(device, precision)):
            logits = model(images)
        correct += (logits.argmax(1) == targets).sum().item()
        total += targets.numel()
    correct, total = D.all_reduce_sum([correct, total], info)
    return correct / max(total, 1)


def train(cfg: Namespace) -> dict:
    """Pretrain a model as ``cfg`` says; returns a summary (best/last top-1, paths)."""
    info = D.init_distributed(cfg.device)
    try:
        return _train(cfg, info)
    finally:
        D.cleanup(info)


def _train(cfg: Namespace, info: D.DistInfo) -> dict:
    autocast_enabled(info.device, cfg.precision)  # a bad --precision stops here, before any work
    check_loggers(cfg.logger)
    run = build_run(cfg, info)
    if run.finished:
        print(f"{cfg.resume} has finished its {cfg.epochs} epochs; nothing to do (pass a larger --epochs to "
              f"train longer)", flush=True)
        return run.summary(run.history[-1].get("val_acc1") if run.history else float("nan"))
    D.barrier(info)  # every process has passed the checks before the first file is written
    tracker = None
    if info.is_main:
        start_files(run, info)
        tracker = open_tracker(run)
    try:
        return _epochs(run, info, tracker)
    finally:
        if tracker is not None:
            tracker.close()


def _epochs(run: PretrainRun, info: D.DistInfo, tracker: Tracker | None) -> dict:
    cfg = run.cfg
    net = run.model
    if info.distributed:  # the NC loss leaves the classifier bias without gradient
        net = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=cfg.loss == "nc")
    loss_fn = loss_function(cfg, run.model)
    acc1 = float("nan")
    for epoch in range(run.start_epoch, cfg.epochs):
        seed_everything(epoch_seed(cfg.seed, epoch, info.rank))
        train_loader, val_loader = make_loaders(cfg, run.train_set, run.val_set, info, epoch)
        lr = run.optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(net, train_loader, run.optimizer, loss_fn, info.device, channels_last=run.channels_last,
                                desc=f"epoch {epoch + 1}/{cfg.epochs}", show_progress=info.is_main,
                                precision=cfg.precision)
        step_scheduler(run.scheduler, epoch + 1, cfg)
        acc1 = evaluate(net, val_loader, info.device, info, run.channels_last, cfg.precision)
        is_best = acc1 > run.best_acc1
        run.best_acc1 = max(acc1, run.best_acc1)
        check_finite(run.model, epoch + 1, run.paths, cfg.resume)  # on every process, so all stop together
        if info.is_main:
            finish_epoch(run, epoch, lr, stats, acc1, is_best, info, tracker)
        D.barrier(info)
    return run.summary(acc1)


def start_files(run: PretrainRun, info: D.DistInfo) -> None:
    """The run's first files (after ``--overwrite`` removed a replaced run): the resolved config
    (with the resume history as comments) and the log so far; the start line."""
    cfg, resume = run.cfg, run.resume
    clear_run(cfg, run.paths)
    save_config(cfg, run.paths["config"], comments=resume.config_comments() if resume else ())
    atomic_write_text(run.paths["log"], "".join(json.dumps(r) + "\n" for r in run.history))
    if resume:
        print(resume.describe(), flush=True)
    params = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    print(f"{cfg.arch} on {cfg.dataset}: {len(run.train_set)} train / {len(run.val_set)} "
          f"{'held-out' if cfg.val_split > 0 else 'test'} images, "
          f"{cfg.num_classes} classes, {params / 1e6:.2f}M trainable parameters, "
          f"device {info.device}" + (f" x {info.world_size} processes" if info.distributed else "") +
          (f"; lr {learning_rate(cfg):.4g} = {cfg.lr:g} x batch {cfg.batch_size} / {cfg.lr_base_batch}"
           if cfg.lr_base_batch else ""), flush=True)


def open_tracker(run: PretrainRun) -> Tracker:
    """The run's ``--logger`` s (rank 0), continuing a resumed run's logs after its last epoch."""
    cfg = run.cfg
    config = {k: v for k, v in vars(cfg).items() if k != "config"}
    return Tracker.open(cfg.logger, run.paths["log"].parent, run.paths["last"].stem, config=config,
                        history=run.history, start_epoch=run.start_epoch)


def finish_epoch(run: PretrainRun, epoch: int, lr: float, stats: EpochStats, acc1: float, is_best: bool,
                 info: D.DistInfo, tracker: Tracker | None = None) -> None:
    """The epoch's log record (with the monitor's measurements), the best and last checkpoints, the
    log lines (JSON lines, then the ``--logger`` s), the epoch line."""
    cfg = run.cfg
    record = {"epoch": epoch + 1, "lr": lr, "loss": stats.loss, "ce_loss": stats.ce_loss,
              "ent_loss": stats.ent_loss, "train_acc1": stats.acc1, "val_acc1": acc1,
              "seconds": round(stats.seconds, 3), "img_per_s": round(stats.samples * info.world_size / stats.seconds, 1)}
    if run.resume is not None and epoch == run.start_epoch:
        record["resumed"] = run.resume.record()
    if run.monitor is not None:
        record.update(run.monitor(run.model))
    run.history.append(record)
    config = {k: v for k, v in vars(cfg).items() if k != "config"}
    extra = {"history": run.history, "resumes": run.resume.resumes if run.resume else [],
             "class_names": run.class_names}
    if is_best:
        save_checkpoint(run.paths["best"], model=run.model, epoch=epoch + 1, config=config, best_acc1=run.best_acc1,
                        extra=extra)
    save_checkpoint(run.paths["last"], model=run.model, epoch=epoch + 1, config=config, optimizer=run.optimizer,
                    scheduler=run.scheduler, best_acc1=run.best_acc1, extra=extra)
    append_jsonl(run.paths["log"], record)
    if tracker is not None:
        tracker.log(record)
    terms = (f"CE {stats.ce_loss:.4f}, entropy {stats.ent_loss:.4f}" if cfg.loss == "ce"
             else f"NC loss; CE {stats.ce_loss:.4f}")
    print(f"epoch {epoch + 1}/{cfg.epochs}  lr {lr:.3g}  loss {stats.loss:.4f} ({terms})  train top-1 "
          f"{stats.acc1:.4f}  val top-1 {acc1:.4f}  {stats.seconds:.1f}s", flush=True)
    if run.monitor is not None:
        print(run.monitor.describe(record), flush=True)
