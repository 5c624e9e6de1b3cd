"""The pretraining loop: data -> model(encoder -> [projector -> L2] -> classifier)
-> CE(label smoothing) + alpha * entropy(encoder embedding) -> checkpoints.

``train(cfg)`` reads top to bottom: build data and model, the optimizer and schedule of
:mod:`engine.recipes` (default: AdamW with warmup + cosine stepped per epoch, the official CNN
recipe; the ViT scripts select the official ViT recipe there), then per epoch one pass of
``train_one_epoch``, top-1 validation, a JSON-lines log record and the last/best checkpoints. Each epoch reseeds every RNG
from (seed, epoch, rank), so ``--resume`` after an interruption reproduces an uninterrupted
run's weights exactly on the CPU.

The DDU recipe (Mukhoti et al., "Deep Deterministic Uncertainty", CVPR 2023; official code
omegafragger/DDU) and its L2-normalized variant (Haas, Yolland & Rabus, TMLR 2022) are flags of
the same loop: ``--optimizer sgd`` (momentum, no Nesterov), ``--schedule step`` (lr x ``gamma``
at each of ``milestones``), ``--val_split`` (a stratified held-out part of the training set
for the per-epoch top-1), the model flags ``--spectral_norm --activation --shortcut``, and for
the NC intervention ``--loss nc`` (:class:`nc_control.NCLoss`, no cross-entropy) from
``--init_from`` a checkpoint, with ``--monitor_ood`` logging NC and GMM detection each epoch
(:mod:`engine.monitor`). ``--monitor_layers`` logs the collapse of named layers each epoch (NC1,
CDNV and VCI on a fixed, capped set of training images), the curves of the embedded study.
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
from torch.utils.data import DataLoader, Subset

from engine import distributed as D
from engine.checkpoint import load_checkpoint, load_weights, save_checkpoint, set_rng_state, unwrap
from engine.config import save_config
from engine.errors import UserError
from engine.io import append_jsonl, atomic_write_text
from engine.progress import progress
from engine.run_guard import (check_finite, check_run_folder, check_values, clear_run, continue_schedule, plan_resume,
                              warn_validation_on_training_images)
from engine.recipes import (RECIPE_DEFAULTS, RECIPE_HELP, build_optimizer, build_scheduler, check_recipe,
                            drop_last_batch, learning_rate, step_scheduler, train_sampler)

# The official ImageNet-100 ResNet recipe; configs/*.yaml and flags override any key.
PRETRAIN_DEFAULTS: dict = dict(
    arch="resnet18", dataset="imagenet100", data=None, num_classes=100, classes=None, max_per_class=None,
    image_size=224, transform=None, crop_interpolation="auto", stem="imagenet", norm="bn", width=1.0, patch_size=16,
    drop_path=0.0,
    alpha=0.0, output_dim=0, hidden_mlp=0, projector="etf", l2_features=False,
    lr=0.01, wd=0.05, epochs=100, warmup_epochs=5, warmup_start_factor=0.01, batch_size=512,
    label_smoothing=0.1, augmentation=True, workers=8, save_dir="checkpoints", ckpt_file="model.pth",
    expt_name="run", seed=0, resume=None, overwrite=False, device="auto",
    optimizer="adamw", momentum=0.9, schedule="cosine", milestones=[], gamma=0.1, val_split=0.0,
    spectral_norm=0.0, activation="relu", shortcut="conv", loss="ce", init_from=None,
    monitor_ood=[], monitor_layers=[], monitor_max_per_class=None,
    class_token=False, pos_embed="sincos", global_pool="avg", conv_bias=False, **RECIPE_DEFAULTS,
)
PRETRAIN_TYPES = {"data": str, "transform": str, "classes": list[int], "max_per_class": int, "resume": str, "milestones": list[int],
                  "init_from": str, "monitor_ood": list[str], "monitor_layers": list[str],
                  "monitor_max_per_class": int}
PRETRAIN_ALIASES = {"batch_size": ["-b"], "workers": ["-j"], "arch": ["-a"]}
PRETRAIN_HELP = {
    "data": "dataset root folder (embedded datasets find their files themselves)",
    "transform": "transform kind, overriding the dataset's: imagenet (RandomResizedCrop; Resize + CenterCrop) or "
                 "small (pad-and-crop + flip; Resize), e.g. small for CIFAR at 32 px",
    "crop_interpolation": "interpolation of the training RandomResizedCrop: bilinear, bicubic, or auto = the "
                          "official code's (bilinear for the CNNs, bicubic for the ViTs)",
    "classes": "original class indices to train on (relabelled 0..k-1), e.g. --classes 0 1 2 3 4 5",
    "alpha": "entropy-regularizer weight on the encoder embedding (0 = off; the method uses 0.05)",
    "output_dim": "projector output width (0 = no projector: the baseline)",
    "hidden_mlp": "projector hidden width (0 = no projector: the baseline)",
    "projector": "etf (fixed simplex-ETF weights, the method), learnable (ablation) or random (fixed "
                 "trunc_normal(0.02) weights: what the official ViT code trains, its ETF weights being "
                 "re-initialized; use it to reproduce the paper's ViT numbers)",
    "l2_features": "L2-normalize the encoder embedding before the classifier (ablation, Haas et al. 2022)",
    "norm": "bn (BatchNorm) or gn_ws (GroupNorm(32) + weight standardization)",
    "stem": "imagenet (7x7 conv + max-pool, 224 px) or cifar (3x3 conv, no max-pool, 28-64 px)",
    "resume": "checkpoint to continue from (the last one, <save_dir>/<ckpt_file>); flags must match its run, except "
              "the schedule's length and shape (--epochs, --warmup_epochs, ...), which then apply from its epoch on",
    "overwrite": "replace a run already in --save_dir with the same --ckpt_file (otherwise refused)",
    "device": "auto (CUDA when present, else CPU), cpu, cuda or cuda:N",
    "optimizer": "adamw (the official NC-OOD recipe) or sgd (momentum --momentum, no Nesterov; DDU)",
    "momentum": "SGD momentum (--optimizer sgd)",
    "schedule": "cosine (linear warmup from lr x --warmup_start_factor over --warmup_epochs, then cosine to 0; "
                "the official CNNs), cosine_timm (timm's CosineLRScheduler: warmup from --warmup_lr, cosine to "
                "--min_lr; the official ViT) or step (lr x --gamma at each of --milestones, no warmup; DDU)",
    "milestones": "epochs after which --schedule step multiplies the lr by --gamma, e.g. --milestones 150 250 "
                  "(none: a constant lr)",
    "gamma": "lr factor at each milestone (--schedule step)",
    "val_split": "> 0: hold out this stratified fraction of the training set (drawn by --seed) as the validation "
                 "set of the per-epoch top-1 instead of the test split (DDU: 0.1)",
    "spectral_norm": "spectral-normalization coefficient of the ResNet's convolutions (0 = off; DDU: 3.0)",
    "activation": "ResNet activation: relu or leaky_relu (DDU)",
    "shortcut": "ResNet downsampling shortcut: conv (1x1 conv + norm) or avgpool (average pool + zero channels; DDU)",
    "class_token": "ViT: prepend a class token (as timm's ViTs; a checkpoint converted from one has it)",
    "pos_embed": "ViT position embedding: sincos (fixed, the official ViTs) or learned (timm's)",
    "global_pool": "ViT embedding: avg (mean of the patch tokens, the official ViTs) or token (the class token, timm's)",
    "conv_bias": "VGG: a bias in every convolution (the official BatchNorm VGG; a checkpoint converted from one has it)",
    "loss": "ce (cross-entropy + --alpha x entropy) or nc (the neural-collapse loss of Haas et al. 2022, "
            "no cross-entropy)",
    "init_from": "checkpoint whose weights start this run (fresh optimizer and schedule, epochs from 0; the model "
                 "flags must match it)",
    "monitor_ood": "OOD dataset specs: after each epoch log NC metrics of the training features and the GMM (DDU) "
                   "AUROC and false positives per set (empty = off)",
    "monitor_layers": "named layers whose NC1, CDNV and VCI on the monitor's training samples (evaluation transform) "
                      "are logged after each epoch, with the model's top-1 on them, e.g. encoder projector; the "
                      "projector layers are skipped for a model without a projector (empty = off)",
    "monitor_max_per_class": "training samples per class the monitor measures, the same ones every epoch (default: all)",
    **RECIPE_HELP,
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


def build_pretrain_model(cfg: Namespace):
    from models import build_model
    from nc_control import NCConfig

    nc = NCConfig(output_dim=cfg.output_dim, hidden_mlp=cfg.hidden_mlp, projector=cfg.projector,
                  l2_features=cfg.l2_features)
    # the DDU ResNet options and the options hosting other codebases' models go to every architecture:
    # build_model rejects them where they do not apply
    ddu = dict(spectral_norm=cfg.spectral_norm, activation=cfg.activation, shortcut=cfg.shortcut,
               class_token=cfg.class_token, pos_embed=cfg.pos_embed, global_pool=cfg.global_pool,
               conv_bias=cfg.conv_bias)
    kwargs = dict(nc_control=nc, norm=cfg.norm, stem=cfg.stem, width=cfg.width, img_size=cfg.image_size, **ddu)
    if cfg.arch.startswith("vit"):
        kwargs = dict(nc_control=nc, img_size=cfg.image_size, patch_size=cfg.patch_size, drop_path=cfg.drop_path, **ddu)
    return build_model(cfg.arch, cfg.num_classes, **kwargs)


def model_flags(model_kwargs: dict) -> list[str]:
    """The flags with which pretrain.py builds the model ``model_kwargs`` describes (those away from
    their defaults), e.g. to start a run from a converted checkpoint with ``--init_from``."""
    values = {**model_kwargs, **model_kwargs["nc_control"], "image_size": model_kwargs["img_size"]}
    flags = []
    for key, default in PRETRAIN_DEFAULTS.items():
        value = values.get(key, default)
        if value == default or key not in values:
            continue
        flags += [f"--{key}" if value else f"--no-{key}"] if isinstance(value, bool) else [f"--{key}", str(value)]
    return flags


def crop_interpolation(cfg: Namespace) -> str:
    """The training crop's interpolation; ``auto`` is the official code's: torchvision's default
    (bilinear) in its CNN pretraining, timm's bicubic in its ViT pretraining."""
    if cfg.crop_interpolation == "auto":
        return "bicubic" if cfg.arch.startswith("vit") else "bilinear"
    if cfg.crop_interpolation not in ("bilinear", "bicubic"):
        raise UserError(f"--crop_interpolation must be auto, bilinear or bicubic, got {cfg.crop_interpolation!r}")
    return cfg.crop_interpolation


def _dataset_kwargs(cfg: Namespace) -> dict:
    return dict(root=cfg.data, image_size=cfg.image_size, classes=cfg.classes, max_per_class=cfg.max_per_class,
                seed=cfg.seed, transform=cfg.transform, interpolation=crop_interpolation(cfg))


def training_part(cfg: Namespace, dataset):
    """``dataset`` (the training split) without the ``--val_split`` hold-out, and the hold-out
    (None without ``--val_split``): a stratified split drawn by ``--seed``, as DDU holds out 10%
    of the CIFAR training set."""
    from data import stratified_split

    if cfg.val_split == 0:
        return dataset, None
    train_idx, val_idx = stratified_split(dataset.targets, cfg.val_split, seed=cfg.seed)
    return Subset(dataset, train_idx.tolist()), Subset(dataset, val_idx.tolist())


def build_pretrain_data(cfg: Namespace):
    """(training set with the training transform, validation set with the evaluation transform):
    the test split, or with ``--val_split`` a held-out part of the training split."""
    from data import build_dataset

    train_set = build_dataset(cfg.dataset, "train", augment=cfg.augmentation, **_dataset_kwargs(cfg))
    if len(train_set) == 0:
        raise UserError(f"dataset '{cfg.dataset}' has no training images under {cfg.data}; check --data and --classes")
    if train_set.num_classes != cfg.num_classes:
        raise UserError(f"class-count mismatch: --num_classes is {cfg.num_classes} but dataset '{cfg.dataset}' "
                        f"(with --classes {cfg.classes}) has {train_set.num_classes} classes; make them agree")
    if cfg.val_split > 0:
        train_part, _ = training_part(cfg, train_set)
        _, val_set = training_part(cfg, build_dataset(cfg.dataset, "train", augment=False, **_dataset_kwargs(cfg)))
        return train_part, val_set
    return train_set, build_dataset(cfg.dataset, "test", augment=False, **_dataset_kwargs(cfg))


def build_monitor(cfg: Namespace, info: D.DistInfo, model: torch.nn.Module):
    """The per-epoch :class:`engine.monitor.EpochMonitor` of ``--monitor_layers`` and
    ``--monitor_ood`` (None when both are empty): the training part of the training split
    (evaluation transform, at most ``--monitor_max_per_class`` per class, drawn once by the seed),
    the test split and each OOD spec's test split. The layers are checked against ``model``'s
    named layers here, before any training; projector layers are dropped for a model without one."""
    if not cfg.monitor_ood and not cfg.monitor_layers:
        return None
    from data import build_dataset, parse_spec
    from engine.evaluation import PROJECTOR_LAYERS
    from engine.features import resolve_layers
    from engine.monitor import EpochMonitor, cap_per_class

    net = unwrap(model)
    layers = [layer for layer in cfg.monitor_layers if layer not in PROJECTOR_LAYERS or net.nc.has_projector]
    if layers:
        resolve_layers(net, layers)
    train, _ = training_part(cfg, build_dataset(cfg.dataset, "train", augment=False, **_dataset_kwargs(cfg)))
    targets = train.dataset.targets[train.indices] if isinstance(train, Subset) else train.targets
    train = Subset(train, cap_per_class(targets, cfg.monitor_max_per_class, cfg.seed).tolist())
    test, ood = None, {}
    if cfg.monitor_ood:
        test = build_dataset(cfg.dataset, "test", augment=False, **_dataset_kwargs(cfg))
        for text in cfg.monitor_ood:
            spec = parse_spec(text)
            ood[spec.label] = build_dataset(**spec.kwargs(image_size=cfg.image_size, seed=cfg.seed), split="test")
    return EpochMonitor(train, cfg.num_classes, layers=layers, test=test, ood=ood, device=info.device,
                        batch_size=cfg.batch_size, num_workers=cfg.workers)


def build_loss_fn(cfg: Namespace, model) -> Callable:
    """``loss_fn(out, targets) -> (loss, ce, ent)`` for ``train_one_epoch``. ``--loss ce``:
    :func:`nc_loss`. ``--loss nc``: :class:`nc_control.NCLoss` on the classifier's input and
    weight, with the cross-entropy computed without gradient for the log only (under
    DistributedDataParallel each process measures NC on its own share of the batch)."""
    from nc_control import EntropyRegularizer, NCLoss

    if cfg.loss == "ce":
        entropy = EntropyRegularizer(global_batch=cfg.entropy_batch == "global")
        return lambda out, targets: nc_loss(out, targets, entropy, cfg.alpha, cfg.label_smoothing)
    criterion, net = NCLoss(), unwrap(model)

    def collapse_loss(out, targets):
        loss = criterion(net.classifier_input(out), targets, net.classifier.weight)
        with torch.no_grad():
            ce = F.cross_entropy(out[2].float(), targets, label_smoothing=cfg.label_smoothing)
        return loss, ce, torch.zeros_like(ce)
    return collapse_loss


def load_initial_weights(cfg: Namespace, model, device) -> None:
    """Start from the weights of ``--init_from`` (a checkpoint of the same architecture)."""
    ckpt = load_checkpoint(cfg.init_from, map_location=device)
    check_same_model(ckpt, model, f"--init_from {cfg.init_from}")
    load_weights(unwrap(model), ckpt["state_dict"], f"--init_from {cfg.init_from}")


def check_same_model(ckpt: dict, model, what: str) -> None:
    """A checkpoint's model must be the one the flags build (its build arguments, with the
    defaults of arguments newer than the checkpoint filled in); else a one-line error naming
    the flags that differ."""
    import inspect

    from models import build_model
    from nc_control import NCConfig

    defaults = {k: p.default for k, p in inspect.signature(build_model).parameters.items()
                if p.default is not inspect.Parameter.empty}
    saved = {**defaults, **ckpt["model_kwargs"]}
    saved["nc_control"] = NCConfig.from_any(saved["nc_control"]).to_dict()
    built = unwrap(model).build_kwargs
    differ = sorted(k for k in set(saved) | set(built) if saved.get(k) != built.get(k))
    if differ:
        shown = ", ".join(f"{k}={saved.get(k)!r}" for k in differ)
        raise UserError(f"{what} holds a different model ({shown}); pass the flags it was trained with "
                        f"(its <name>.config.yaml works as --config)")


def _loaders(cfg: Namespace, train_set, val_set, info: D.DistInfo, epoch: int):
    per_rank_batch = max(1, cfg.batch_size // info.world_size)
    common = dict(num_workers=cfg.workers, pin_memory=info.device.type == "cuda")
    generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    sampler = train_sampler(cfg, train_set, info.rank, info.world_size, epoch, seed=epoch_seed(cfg.seed, epoch))
    drop_last = drop_last_batch(cfg, len(sampler if sampler is not None else train_set), per_rank_batch)
    train_loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, shuffle=sampler is None,
                              drop_last=drop_last, generator=generator, **common)
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
    check_values(cfg, info.world_size)
    check_recipe(cfg)
    paths = run_paths(cfg)
    check_run_folder(cfg, paths)
    seed_everything(cfg.seed)
    train_set, val_set = build_pretrain_data(cfg)
    warn_validation_on_training_images(cfg, val_set)
    model = build_pretrain_model(cfg)
    is_cnn = not cfg.arch.startswith("vit")
    channels_last = info.device.type == "cuda" and is_cnn
    model = model.to(info.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    monitor = build_monitor(cfg, info, model) if info.is_main else None  # checks its layers before any file is written
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    start_epoch, best_acc1, history, resume = 0, -1.0, [], None
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume, map_location=info.device)
        check_same_model(ckpt, model, f"--resume {cfg.resume}")
        resume = plan_resume(cfg, ckpt, paths)
        load_weights(unwrap(model), ckpt["state_dict"], f"--resume {cfg.resume}")
        optimizer.load_state_dict(ckpt["optimizer"])
        if resume.schedule_changed:  # the new schedule from the epoch reached
            scheduler = continue_schedule(optimizer, lambda opt: build_scheduler(opt, cfg),
                                          lambda sched, done: step_scheduler(sched, done, cfg), resume.epochs_done)
        else:
            scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_acc1 = ckpt["epoch"], ckpt["best_acc1"] if ckpt["best_acc1"] is not None else -1.0
        history = list(ckpt.get("history", []))
        set_rng_state(ckpt["rng"])
        if start_epoch == cfg.epochs:
            print(f"{cfg.resume} has finished its {cfg.epochs} epochs; nothing to do (pass a larger --epochs to "
                  f"train longer)", flush=True)
            return {"best_acc1": best_acc1, "last_acc1": history[-1].get("val_acc1") if history else float("nan"),
                    "epochs": cfg.epochs, **{k: str(v) for k, v in paths.items()}}
    elif cfg.init_from:
        load_initial_weights(cfg, model, info.device)
    config = {k: v for k, v in vars(cfg).items() if k != "config"}
    resumes = resume.resumes if resume else []
    class_names = list(getattr(getattr(train_set, "dataset", train_set), "classes", []))
    D.barrier(info)  # every process has passed the checks before the first file is written
    if info.is_main:
        clear_run(cfg, paths)
        save_config(cfg, paths["config"], comments=resume.config_comments() if resume else ())
        atomic_write_text(paths["log"], "".join(json.dumps(r) + "\n" for r in history))
        if resume:
            print(resume.describe(), flush=True)
        print(f"{cfg.arch} on {cfg.dataset}: {len(train_set)} train / {len(val_set)} "
              f"{'held-out' if cfg.val_split > 0 else 'test'} images, "
              f"{cfg.num_classes} classes, {sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters, "
              f"device {info.device}" + (f" x {info.world_size} processes" if info.distributed else "") +
              (f"; lr {learning_rate(cfg):.4g} = {cfg.lr:g} x batch {cfg.batch_size} / {cfg.lr_base_batch}"
               if cfg.lr_base_batch else ""), flush=True)
    net = model
    if info.distributed:  # the NC loss leaves the classifier bias without gradient
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=cfg.loss == "nc")
    loss_fn = build_loss_fn(cfg, model)

    acc1 = float("nan")
    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(epoch_seed(cfg.seed, epoch, info.rank))
        train_loader, val_loader = _loaders(cfg, train_set, val_set, info, epoch)
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(net, train_loader, optimizer, loss_fn, info.device, channels_last=channels_last,
                                desc=f"epoch {epoch + 1}/{cfg.epochs}", show_progress=info.is_main)
        step_scheduler(scheduler, epoch + 1, cfg)
        acc1 = evaluate(net, val_loader, info.device, info, channels_last)
        is_best = acc1 > best_acc1
        best_acc1 = max(acc1, best_acc1)
        check_finite(model, epoch + 1, paths)  # on every process, so all stop together
        if info.is_main:
            record = {"epoch": epoch + 1, "lr": lr, "loss": stats.loss, "ce_loss": stats.ce_loss,
                      "ent_loss": stats.ent_loss, "train_acc1": stats.acc1, "val_acc1": acc1,
                      "seconds": round(stats.seconds, 3), "img_per_s": round(stats.samples * info.world_size / stats.seconds, 1)}
            if resume is not None and epoch == start_epoch:
                record["resumed"] = resume.record()
            if monitor is not None:
                record.update(monitor(model))
            history.append(record)
            extra = {"history": history, "resumes": resumes, "class_names": class_names}
            if is_best:
                save_checkpoint(paths["best"], model=model, epoch=epoch + 1, config=config, best_acc1=best_acc1,
                                extra=extra)
            save_checkpoint(paths["last"], model=model, epoch=epoch + 1, config=config, optimizer=optimizer,
                            scheduler=scheduler, best_acc1=best_acc1, extra=extra)
            append_jsonl(paths["log"], record)
            terms = (f"CE {stats.ce_loss:.4f}, entropy {stats.ent_loss:.4f}" if cfg.loss == "ce"
                     else f"NC loss; CE {stats.ce_loss:.4f}")
            print(f"epoch {epoch + 1}/{cfg.epochs}  lr {lr:.3g}  loss {stats.loss:.4f} ({terms})  train top-1 "
                  f"{stats.acc1:.4f}  val top-1 {acc1:.4f}  {stats.seconds:.1f}s", flush=True)
            if monitor is not None:
                print(monitor.describe(record), flush=True)
        D.barrier(info)
    return {"best_acc1": best_acc1, "last_acc1": acc1, "epochs": cfg.epochs,
            **{k: str(v) for k, v in paths.items()}}

