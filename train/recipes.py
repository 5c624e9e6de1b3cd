"""The optimization recipe of a pretraining run: learning rate, optimizer and its parameter groups,
learning-rate schedule, and the sampler that orders the training images.

Three recipes are flags of the same functions (their help in :mod:`train.options`):

- the official NC-OOD CNN recipe (``resnet/pretrain_resnet*.py``, ``vgg/pretrain_vgg*.py``), the
  defaults: ``--lr`` as given, AdamW with weight decay on every parameter, ``torch.optim.lr_scheduler``
  linear warmup from ``lr x 0.01`` over 5 epochs then cosine to 0, stepped per epoch, shuffled batches
  and the last incomplete batch kept;
- the official ViT recipe (``vit_exp_all/main_pretrain.py``, built on DeiT with timm), what
  ``scripts/pretrain_vit*.sh`` pass: ``--lr_base_batch 512`` (the lr scales linearly with the global
  batch), ``--no-wd_norm_bias`` (timm's parameter groups: no weight decay on biases and 1-D
  parameters), ``--schedule cosine_timm`` (timm's ``CosineLRScheduler``: warmup from 1e-6, cosine
  to 1e-5, stepped per epoch) and ``--repeated_aug 3`` (timm's ``RepeatAugSampler``);
- DDU (Mukhoti et al., CVPR 2023): ``--optimizer sgd --schedule step``.

Everything here is timm's or torch's own helper, configured; resuming restores the optimizer and
scheduler states from the checkpoint, and the samplers are reseeded from (seed, epoch) every epoch.
"""
from __future__ import annotations

from argparse import Namespace

import torch
from torch.utils.data import DistributedSampler, Sampler

from core.errors import UserError
from nc_control import check_loss_options
from train.options import RECIPE_DEFAULTS

OPTIMIZERS, SCHEDULES = ("adamw", "sgd"), ("cosine", "cosine_timm", "step")


def check_recipe(cfg: Namespace) -> None:
    """Reject flag combinations that would otherwise be silently ignored or fail late."""
    try:
        check_loss_options(cfg.loss, cfg.alpha, cfg.entropy_batch)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for key, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if getattr(cfg, key) not in choices:
            raise UserError(f"--{key} must be one of {', '.join(choices)}, got {getattr(cfg, key)!r}")
    if cfg.schedule == "step":
        if cfg.warmup_epochs > 0:
            raise UserError("--schedule step has no warmup; pass --warmup_epochs 0 (warmup belongs to --schedule cosine)")
        if list(cfg.milestones) != sorted(set(cfg.milestones)) or any(not 0 < m < cfg.epochs for m in cfg.milestones):
            raise UserError(f"--milestones must be increasing epochs in 1..{cfg.epochs - 1} (--epochs {cfg.epochs}), "
                            f"got {list(cfg.milestones)}")
        if not cfg.gamma > 0:
            raise UserError(f"--gamma must be > 0, got {cfg.gamma}")
    elif cfg.milestones:
        raise UserError("--milestones applies to --schedule step only; drop it or pass --schedule step")
    timm_only = [k for k in ("warmup_lr", "min_lr", "schedule_lag") if getattr(cfg, k) != RECIPE_DEFAULTS[k]]
    if cfg.schedule != "cosine_timm" and timm_only:
        raise UserError(f"--{timm_only[0]} applies to --schedule cosine_timm only; drop it or pass --schedule cosine_timm")
    if cfg.lr_base_batch < 0:
        raise UserError(f"--lr_base_batch must be >= 0 (0: --lr as given), got {cfg.lr_base_batch}")
    if cfg.repeated_aug < 1:
        raise UserError(f"--repeated_aug is the number of times each image is drawn per epoch (>= 1, 1 = off), "
                        f"got {cfg.repeated_aug}")
    if not 0.0 <= cfg.val_split < 1.0:
        raise UserError(f"--val_split must be in [0, 1), got {cfg.val_split}")


def learning_rate(cfg: Namespace) -> float:
    """The optimizer's peak learning rate: ``--lr``, or with ``--lr_base_batch N > 0`` the linear
    scaling rule (Goyal et al., 2017) of the official ViT code, ``lr x batch_size / N``, where
    ``--batch_size`` is the global batch (all processes together)."""
    return cfg.lr * cfg.batch_size / cfg.lr_base_batch if cfg.lr_base_batch > 0 else cfg.lr


def parameter_groups(model: torch.nn.Module, cfg: Namespace) -> list[dict]:
    """The trainable parameters (fixed ETF weights excluded) in one group with weight decay
    ``--wd`` (``--wd_norm_bias``, the official CNNs), or split by timm's
    ``param_groups_weight_decay``: biases and 1-D parameters (norm weights) without weight
    decay, the rest with ``--wd`` (``--no-wd_norm_bias``, the official ViT)."""
    if cfg.wd_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg.wd}]
    from timm.optim import param_groups_weight_decay

    return param_groups_weight_decay(model, weight_decay=cfg.wd)


def build_optimizer(model: torch.nn.Module, cfg: Namespace) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or SGD with momentum (weight decay as L2 in the gradient,
    no Nesterov) over :func:`parameter_groups`, at :func:`learning_rate`."""
    groups, lr = parameter_groups(model, cfg), learning_rate(cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.wd, nesterov=False)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.wd)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Namespace):
    """Per-epoch learning rate (advanced by :func:`step_scheduler` after each epoch).

    - ``cosine``: linear warmup from ``lr x --warmup_start_factor`` over ``--warmup_epochs``, then
      cosine to 0 over the remaining epochs (``torch.optim.lr_scheduler``; the official CNNs).
    - ``cosine_timm``: timm's ``CosineLRScheduler`` as the official ViT code configures it
      (``timm.scheduler.create_scheduler``): epoch t < ``--warmup_epochs`` runs at
      ``warmup_lr + t (lr - warmup_lr) / warmup_epochs``, epoch t >= ``--warmup_epochs`` at
      ``min_lr + (lr - min_lr) (1 + cos(pi t / epochs)) / 2`` (t counted from 0, the warmup
      included: no warmup prefix).
    - ``step``: lr x ``--gamma`` after each epoch in ``--milestones`` (``MultiStepLR``; DDU).
    """
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if cfg.schedule == "cosine_timm":
        from timm.scheduler import CosineLRScheduler

        return CosineLRScheduler(optimizer, t_initial=cfg.epochs, lr_min=cfg.min_lr, warmup_t=cfg.warmup_epochs,
                                 warmup_lr_init=cfg.warmup_lr, t_in_epochs=True)
    warmup_epochs = max(0, min(cfg.warmup_epochs, cfg.epochs))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs - warmup_epochs), eta_min=0.0)
    if warmup_epochs == 0:
        return cosine
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=cfg.warmup_start_factor, total_iters=warmup_epochs)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])


def step_scheduler(scheduler, epochs_done: int, cfg: Namespace) -> None:
    """Advance the schedule after an epoch: the next epoch runs at the value for epoch index
    ``epochs_done``; with ``--schedule_lag`` (cosine_timm) at the value for ``epochs_done - 1``, as
    the official ViT loop calls ``lr_scheduler.step(epoch)`` with the epoch just finished."""
    if cfg.schedule == "cosine_timm":
        scheduler.step(epochs_done - 1 if cfg.schedule_lag else epochs_done)
    else:
        scheduler.step()


def train_sampler(cfg: Namespace, dataset, rank: int, world_size: int, epoch: int, seed: int) -> Sampler | None:
    """The sampler of the training loader, or None (one process: a shuffle drawn by the loader).

    - ``--repeated_aug k > 1``: timm's ``RepeatAugSampler`` (DeiT's repeated augmentation; the
      official ViT code uses it with k = 3 in one process too): each epoch draws a permutation,
      repeats every index k times in a row and deals the list out to the processes in turn (so
      the k augmented copies of an image land on different processes when there are at least k),
      then keeps ``len(dataset) // 256 * 256 / world_size`` indices per process: about 1/k of the
      distinct images per epoch. Its permutation is drawn from ``seed`` (the same on every rank).
    - several processes: ``DistributedSampler`` shuffled by ``--seed`` and the epoch, padded to equal
      shares (``--drop_last``: cut instead).
    """
    if cfg.repeated_aug > 1:
        from timm.data.distributed_sampler import RepeatAugSampler

        sampler = RepeatAugSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                   num_repeats=cfg.repeated_aug)
        sampler.set_epoch(seed)
        return sampler
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed,
                                     drop_last=cfg.drop_last)
        sampler.set_epoch(epoch)
        return sampler
    return None


def drop_last_batch(cfg: Namespace, samples: int, batch_size: int) -> bool:
    """Whether the loader drops the epoch's last incomplete batch: with ``--drop_last``, or when it
    would hold a single sample (BatchNorm in training and the entropy term's neighbour search need
    two). The official code keeps it."""
    return cfg.drop_last or samples % batch_size == 1
