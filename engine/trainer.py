"""The pretraining loop: data -> model(encoder -> [projector -> L2] -> classifier)
-> CE(label smoothing) + alpha * entropy(encoder embedding) -> checkpoints.

``train(cfg)`` reads top to bottom: build data and model, AdamW with warmup + cosine (stepped
per epoch, as the official recipe), then per epoch one pass of ``train_one_epoch``, top-1
validation, a JSON-lines log record and the last/best checkpoints. Each epoch reseeds every RNG
from (seed, epoch, rank), so ``--resume`` after an interruption reproduces an uninterrupted
run's weights exactly on the CPU.
"""
from __future__ import annotations

import json
import math
import random
import time
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset

from engine import distributed as D
from engine.checkpoint import load_checkpoint, save_checkpoint, set_rng_state, unwrap
from engine.config import save_config
from engine.errors import UserError
from engine.io import append_jsonl, atomic_write_text
from engine.progress import progress

# The official ImageNet-100 ResNet recipe; configs/*.yaml and flags override any key.
PRETRAIN_DEFAULTS: dict = dict(
    arch="resnet18", dataset="imagenet100", data=None, num_classes=100, classes=None, max_per_class=None,
    image_size=224, stem="imagenet", norm="bn", width=1.0, patch_size=16, drop_path=0.0,
    alpha=0.0, output_dim=0, hidden_mlp=0, projector="etf", l2_features=False,
    lr=0.01, wd=0.05, epochs=100, warmup_epochs=5, warmup_start_factor=0.01, batch_size=512,
    label_smoothing=0.1, augmentation=True, workers=8, save_dir="checkpoints", ckpt_file="model.pth",
    expt_name="run", seed=0, resume=None, device="auto",
)
PRETRAIN_TYPES = {"data": str, "classes": list[int], "max_per_class": int, "resume": str}
PRETRAIN_ALIASES = {"batch_size": ["-b"], "workers": ["-j"], "arch": ["-a"]}
PRETRAIN_HELP = {
    "data": "dataset root folder (embedded datasets find their files themselves)",
    "classes": "original class indices to train on (relabelled 0..k-1), e.g. --classes 0 1 2 3 4 5",
    "alpha": "entropy-regularizer weight on the encoder embedding (0 = off; the method uses 0.05)",
    "output_dim": "projector output width (0 = no projector: the baseline)",
    "hidden_mlp": "projector hidden width (0 = no projector: the baseline)",
    "projector": "etf (fixed simplex-ETF weights, the method) or learnable (ablation)",
    "l2_features": "L2-normalize the encoder embedding before the classifier (ablation, Haas et al. 2022)",
    "norm": "bn (BatchNorm) or gn_ws (GroupNorm(32) + weight standardization)",
    "stem": "imagenet (7x7 conv + max-pool, 224 px) or cifar (3x3 conv, no max-pool, 28-64 px)",
    "resume": "checkpoint to continue from (the last one, <save_dir>/<ckpt_file>)",
    "device": "auto (CUDA when present, else CPU), cpu, cuda or cuda:N",
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)


@dataclass
class EpochStats:
    loss: float
    ce_loss: float
    ent_loss: float
    acc1: float
    samples: int
    seconds: float


def nc_loss(out: tuple, targets: torch.Tensor, entropy: torch.nn.Module, alpha: float,
            label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss = CE(label smoothing) + alpha * entropy(encoder embedding); returns (loss, ce, ent)."""
    enc, _, logits = out
    ce = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    ent = entropy(enc) if alpha != 0 else enc.new_zeros((), dtype=torch.float32)
    return ce + alpha * ent, ce, ent


def train_one_epoch(model: torch.nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    loss_fn: Callable, device: torch.device, *, channels_last: bool = False,
                    desc: str = "train", show_progress: bool = True, sync_every: int = 25) -> EpochStats:
    """One pass over ``loader``. Loss sums stay on the device and are read every ``sync_every``
    steps (and at the end), where a non-finite loss stops training with a clear error."""
    model.train()
    use_amp = device.type == "cuda"
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
             channels_last: bool = False) -> float:
    """Top-1 accuracy over a (rank-sharded) loader, summed over processes."""
    model.eval()
    correct = total = 0
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(images)
        correct += (logits.argmax(1) == targets).sum().item()
        total += targets.numel()
    correct, total = D.all_reduce_sum([correct, total], info)
    return correct / max(total, 1)


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int, start_factor: float):
    """Linear warmup from ``start_factor`` over ``warmup_epochs``, then cosine to 0 (per epoch)."""
    warmup_epochs = max(0, min(warmup_epochs, epochs))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs - warmup_epochs), eta_min=0.0)
    if warmup_epochs == 0:
        return cosine
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start_factor, total_iters=warmup_epochs)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])


def build_pretrain_model(cfg: Namespace):
    from models import build_model
    from nc_control import NCConfig

    nc = NCConfig(output_dim=cfg.output_dim, hidden_mlp=cfg.hidden_mlp, projector=cfg.projector,
                  l2_features=cfg.l2_features)
    kwargs = dict(nc_control=nc, norm=cfg.norm, stem=cfg.stem, width=cfg.width, img_size=cfg.image_size)
    if cfg.arch.startswith("vit"):
        kwargs = dict(nc_control=nc, img_size=cfg.image_size, patch_size=cfg.patch_size, drop_path=cfg.drop_path)
    return build_model(cfg.arch, cfg.num_classes, **kwargs)


def build_pretrain_data(cfg: Namespace):
    from data import build_dataset

    common = dict(root=cfg.data, image_size=cfg.image_size, classes=cfg.classes,
                  max_per_class=cfg.max_per_class, seed=cfg.seed)
    train_set = build_dataset(cfg.dataset, "train", augment=cfg.augmentation, **common)
    val_set = build_dataset(cfg.dataset, "test", augment=False, **common)
    if len(train_set) == 0:
        raise UserError(f"dataset '{cfg.dataset}' has no training images under {cfg.data}; check --data and --classes")
    if train_set.num_classes != cfg.num_classes:
        raise UserError(f"class-count mismatch: --num_classes is {cfg.num_classes} but dataset '{cfg.dataset}' "
                        f"(with --classes {cfg.classes}) has {train_set.num_classes} classes; make them agree")
    return train_set, val_set


def _loaders(cfg: Namespace, train_set, val_set, info: D.DistInfo, epoch: int):
    per_rank_batch = max(1, cfg.batch_size // info.world_size)
    common = dict(num_workers=cfg.workers, pin_memory=info.device.type == "cuda")
    generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    if info.distributed:
        sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
        train_loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, drop_last=True,
                                  generator=generator, **common)
    else:
        train_loader = DataLoader(train_set, batch_size=per_rank_batch, shuffle=True, drop_last=len(train_set) > per_rank_batch,
                                  generator=generator, **common)
    shard = Subset(val_set, range(info.rank, len(val_set), info.world_size))
    val_loader = DataLoader(shard, batch_size=per_rank_batch, shuffle=False, **common)
    return train_loader, val_loader


def run_paths(cfg: Namespace) -> dict[str, Path]:
    save_dir = Path(cfg.save_dir)
    stem = Path(cfg.ckpt_file).stem
    return {"last": save_dir / cfg.ckpt_file, "best": save_dir / f"best_{cfg.ckpt_file}",
            "log": save_dir / f"{stem}.log.jsonl", "config": save_dir / f"{stem}.config.yaml"}


def train(cfg: Namespace) -> dict:
    """Pretrain a model as ``cfg`` says; returns a summary (best/last top-1, paths)."""
    info = D.init_distributed(cfg.device)
    try:
        return _train(cfg, info)
    finally:
        D.cleanup(info)


def _train(cfg: Namespace, info: D.DistInfo) -> dict:
    seed_everything(cfg.seed)
    paths = run_paths(cfg)
    train_set, val_set = build_pretrain_data(cfg)
    model = build_pretrain_model(cfg)
    is_cnn = not cfg.arch.startswith("vit")
    channels_last = info.device.type == "cuda" and is_cnn
    model = model.to(info.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.wd)
    scheduler = build_scheduler(optimizer, cfg.epochs, cfg.warmup_epochs, cfg.warmup_start_factor)
    start_epoch, best_acc1, history = 0, -1.0, []
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume, map_location=info.device)
        if ckpt["model_kwargs"] != unwrap(model).build_kwargs:
            raise UserError(f"--resume {cfg.resume} was trained with a different model "
                            f"({ckpt['model_kwargs']}); resume with the same --arch and NC flags")
        unwrap(model).load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_acc1 = ckpt["epoch"], ckpt["best_acc1"] if ckpt["best_acc1"] is not None else -1.0
        history = list(ckpt.get("history", []))
        set_rng_state(ckpt["rng"])
    config = {k: v for k, v in vars(cfg).items() if k != "config"}
    if info.is_main:
        save_config(cfg, paths["config"])
        atomic_write_text(paths["log"], "".join(json.dumps(r) + "\n" for r in history))
        print(f"{cfg.arch} on {cfg.dataset}: {len(train_set)} train / {len(val_set)} test images, "
              f"{cfg.num_classes} classes, {sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters, "
              f"device {info.device}" + (f" x {info.world_size} processes" if info.distributed else ""), flush=True)
    net = model
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    from nc_control import EntropyRegularizer
    entropy = EntropyRegularizer().to(info.device)

    def loss_fn(out, targets):
        return nc_loss(out, targets, entropy, cfg.alpha, cfg.label_smoothing)

    acc1 = float("nan")
    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(epoch_seed(cfg.seed, epoch, info.rank))
        train_loader, val_loader = _loaders(cfg, train_set, val_set, info, epoch)
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(net, train_loader, optimizer, loss_fn, info.device, channels_last=channels_last,
                                desc=f"epoch {epoch + 1}/{cfg.epochs}", show_progress=info.is_main)
        scheduler.step()
        acc1 = evaluate(net, val_loader, info.device, info, channels_last)
        is_best = acc1 > best_acc1
        best_acc1 = max(acc1, best_acc1)
        if info.is_main:
            record = {"epoch": epoch + 1, "lr": lr, "loss": stats.loss, "ce_loss": stats.ce_loss,
                      "ent_loss": stats.ent_loss, "train_acc1": stats.acc1, "val_acc1": acc1,
                      "seconds": round(stats.seconds, 3), "img_per_s": round(stats.samples * info.world_size / stats.seconds, 1)}
            history.append(record)
            if is_best:
                save_checkpoint(paths["best"], model=model, epoch=epoch + 1, config=config, best_acc1=best_acc1,
                                extra={"history": history})
            save_checkpoint(paths["last"], model=model, epoch=epoch + 1, config=config, optimizer=optimizer,
                            scheduler=scheduler, best_acc1=best_acc1, extra={"history": history})
            append_jsonl(paths["log"], record)
            print(f"epoch {epoch + 1}/{cfg.epochs}  lr {lr:.3g}  loss {stats.loss:.4f} (CE {stats.ce_loss:.4f}, "
                  f"entropy {stats.ent_loss:.4f})  train top-1 {stats.acc1:.4f}  val top-1 {acc1:.4f}  "
                  f"{stats.seconds:.1f}s", flush=True)
        D.barrier(info)
    return {"best_acc1": best_acc1, "last_acc1": acc1, "epochs": cfg.epochs,
            **{k: str(v) for k, v in paths.items()}}

