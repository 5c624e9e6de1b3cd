"""Building a pretraining run from its configuration: the data, the model, the collapse monitor,
the loaders of each epoch, the starting weights, and the state a ``--resume`` continues from.

:func:`build_run` does it in the order that fixes the random draws (seed, data, model, monitor,
optimizer, schedule), so the same seed and flags give the same run; :class:`PretrainRun` holds
what the training loop (:mod:`train.loop`) then needs.
"""
from __future__ import annotations

import inspect
import random
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from core import distributed as D
from core.checkpoint import check_weights_finite, load_checkpoint, load_weights, rng_state, set_rng_state, unwrap
from core.errors import UserError
from models.defaults import arch_defaults
from models.registry import OPTION_DEFAULTS
from train.guards import (
    ResumePlan,
    check_run_folder,
    check_values,
    continue_schedule,
    hold_run_folder,
    plan_resume,
    warn_validation_on_training_images,
)
from train.recipes import (
    build_optimizer,
    build_scheduler,
    check_recipe,
    drop_last_batch,
    step_scheduler,
    train_sampler,
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)


def run_paths(cfg: Namespace) -> dict[str, Path]:
    """The files of a run: the last and best checkpoints, the JSON-lines log and the resolved config."""
    save_dir = Path(cfg.save_dir)
    stem = Path(cfg.ckpt_file).stem
    return {"last": save_dir / cfg.ckpt_file, "best": save_dir / f"best_{cfg.ckpt_file}",
            "log": save_dir / f"{stem}.log.jsonl", "config": save_dir / f"{stem}.config.yaml"}


# --------------------------------------------------------------------------- data

def crop_interpolation(cfg: Namespace) -> str:
    """The training crop's interpolation; ``auto`` is the architecture's default (the official
    code's: torchvision's default, bilinear, for the CNNs and the ViTs alike)."""
    if cfg.crop_interpolation == "auto":
        return arch_defaults(cfg.arch).crop_interpolation
    if cfg.crop_interpolation not in ("bilinear", "bicubic"):
        raise UserError(f"--crop_interpolation must be auto, bilinear or bicubic, got {cfg.crop_interpolation!r}")
    return cfg.crop_interpolation


def dataset_kwargs(cfg: Namespace) -> dict:
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

    train_set = build_dataset(cfg.dataset, "train", augment=cfg.augmentation, **dataset_kwargs(cfg))
    if len(train_set) == 0:
        raise UserError(f"dataset '{cfg.dataset}' has no training images under {cfg.data}; check --data and --classes")
    if train_set.num_classes != cfg.num_classes:
        raise UserError(f"class-count mismatch: --num_classes is {cfg.num_classes} but dataset '{cfg.dataset}' "
                        f"(with --classes {cfg.classes}) has {train_set.num_classes} classes; make them agree")
    if cfg.val_split > 0:
        train_part, _ = training_part(cfg, train_set)
        _, val_set = training_part(cfg, build_dataset(cfg.dataset, "train", augment=False, **dataset_kwargs(cfg)))
        return train_part, val_set
    return train_set, build_dataset(cfg.dataset, "test", augment=False, **dataset_kwargs(cfg))


def check_first_samples(train_set, val_set) -> None:
    """Read the first sample of each split through its transform before any file is written, so an
    unreadable image or a transform that cannot apply is one line before the run starts (the random
    state is restored: the run draws what it would have drawn without this check)."""
    state = rng_state()
    try:
        for split in (train_set, val_set):
            if len(split):
                split[0]
    finally:
        set_rng_state(state)


def make_loaders(cfg: Namespace, train_set, val_set, info: D.DistInfo, epoch: int):
    """The epoch's training loader (shuffled or sampled from (seed, epoch)) and the rank's share of
    the validation set. The training loader reads :class:`data.dataset.EpochSamples`: each sample's
    augmentation is drawn from (seed, epoch, rank, its position in the epoch), and the epoch's order
    is fixed before any iterator exists (an iterator made and dropped, as tqdm.auto's does, draws
    differently with and without workers), so ``--workers`` changes no result; JPEG crops are
    decoded as ``--fast_decode`` says. On CUDA its batches leave the workers as uint8 and are
    normalized on the device (:class:`data.dataset.DeviceBatches`; the same values)."""
    from data.dataset import DeviceBatches, EpochSamples, PositionSampler, use_fast_decode

    per_rank_batch = max(1, cfg.batch_size // info.world_size)
    common = dict(num_workers=cfg.workers, pin_memory=info.device.type == "cuda")
    generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    sampler = train_sampler(cfg, train_set, info.rank, info.world_size, epoch, seed=epoch_seed(cfg.seed, epoch))
    drop_last = drop_last_batch(cfg, len(sampler if sampler is not None else train_set), per_rank_batch)
    order = sampler if sampler is not None else torch.randperm(len(train_set), generator=generator).tolist()
    use_fast_decode(train_set, cfg.fast_decode)
    samples = EpochSamples(train_set, epoch_seed(cfg.seed, epoch, info.rank), uint8=info.device.type == "cuda")
    train_loader = DataLoader(samples, batch_size=per_rank_batch, sampler=PositionSampler(order), drop_last=drop_last,
                              generator=generator, **common)
    if samples.normalize is not None:  # uint8 batches, normalized on the GPU
        train_loader = DeviceBatches(train_loader, samples.normalize, info.device)
    shard = Subset(val_set, range(info.rank, len(val_set), info.world_size))
    val_loader = DataLoader(shard, batch_size=per_rank_batch, shuffle=False, **common)
    return train_loader, val_loader


# --------------------------------------------------------------------------- model

def build_pretrain_model(cfg: Namespace):
    """The model the flags describe; every build option goes to :func:`models.build_model`, which
    refuses those the architecture does not take when they are away from their defaults."""
    from models import build_model
    from nc_control import NCConfig

    nc = NCConfig(output_dim=cfg.output_dim, hidden_mlp=cfg.hidden_mlp, projector=cfg.projector,
                  l2_features=cfg.l2_features)
    options = {name: getattr(cfg, name) for name in OPTION_DEFAULTS}
    return build_model(cfg.arch, cfg.num_classes, nc_control=nc, img_size=cfg.image_size, **options)


def uses_channels_last(cfg: Namespace, device: torch.device) -> bool:
    """NHWC memory format: on CUDA, for the architectures whose default configuration asks for it (CNNs)."""
    return device.type == "cuda" and arch_defaults(cfg.arch).channels_last


def loss_function(cfg: Namespace, model: torch.nn.Module):
    """The training loss of :mod:`nc_control.loss` with the run's options."""
    from nc_control import build_loss

    return build_loss(cfg.loss, cfg.alpha, cfg.label_smoothing, cfg.entropy_batch, unwrap(model))


def check_same_model(ckpt: dict, model, what: str) -> None:
    """A checkpoint's model must be the one the flags build (its build arguments, with the
    defaults of arguments newer than the checkpoint filled in); else a one-line error naming
    the flags that differ."""
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


def load_initial_weights(cfg: Namespace, model, device) -> None:
    """Start from the weights of ``--init_from`` (a checkpoint of the same architecture)."""
    ckpt = load_checkpoint(cfg.init_from, map_location=device)
    check_same_model(ckpt, model, f"--init_from {cfg.init_from}")
    check_weights_finite(ckpt["state_dict"], f"--init_from {cfg.init_from}")
    load_weights(unwrap(model), ckpt["state_dict"], f"--init_from {cfg.init_from}")


def build_monitor(cfg: Namespace, info: D.DistInfo, model: torch.nn.Module):
    """The per-epoch :class:`train.monitor.EpochMonitor` of ``--monitor_layers`` and
    ``--monitor_ood`` (None when both are empty): the training part of the training split
    (evaluation transform, at most ``--monitor_max_per_class`` per class, drawn once by the seed),
    the test split and each OOD spec's test split. The layers are checked against ``model``'s
    named layers here, before any training; projector layers are dropped for a model without one."""
    if not cfg.monitor_ood and not cfg.monitor_layers:
        return None
    from data import build_dataset, parse_spec
    from features.extract import resolve_layers
    from nc_control import PROJECTOR_LAYERS
    from train.monitor import EpochMonitor, cap_per_class

    net = unwrap(model)
    layers = [layer for layer in cfg.monitor_layers if layer not in PROJECTOR_LAYERS or net.nc.has_projector]
    if layers:
        resolve_layers(net, layers)
    train, _ = training_part(cfg, build_dataset(cfg.dataset, "train", augment=False, **dataset_kwargs(cfg)))
    targets = train.dataset.targets[train.indices] if isinstance(train, Subset) else train.targets
    train = Subset(train, cap_per_class(targets, cfg.monitor_max_per_class, cfg.seed).tolist())
    test, ood = None, {}
    if cfg.monitor_ood:
        test = build_dataset(cfg.dataset, "test", augment=False, **dataset_kwargs(cfg))
        for text in cfg.monitor_ood:
            spec = parse_spec(text)
            ood[spec.label] = build_dataset(**spec.kwargs(image_size=cfg.image_size, seed=cfg.seed), split="test")
    return EpochMonitor(train, cfg.num_classes, layers=layers, test=test, ood=ood, device=info.device,
                        batch_size=cfg.batch_size, num_workers=cfg.workers)


# --------------------------------------------------------------------------- the run

@dataclass
class PretrainRun:
    """Everything the training loop needs, built and checked before any file is written."""
    cfg: Namespace
    paths: dict[str, Path]
    train_set: object
    val_set: object
    model: torch.nn.Module
    channels_last: bool
    monitor: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    start_epoch: int = 0
    best_acc1: float = -1.0
    history: list[dict] = field(default_factory=list)
    resume: ResumePlan | None = None

    @property
    def class_names(self) -> list[str]:
        """The training set's class names, index = label (recorded in every checkpoint)."""
        return list(getattr(getattr(self.train_set, "dataset", self.train_set), "classes", []))

    @property
    def finished(self) -> bool:
        """A resumed run that has already trained all its epochs."""
        return self.resume is not None and self.start_epoch == self.cfg.epochs

    def summary(self, last_acc1: float) -> dict:
        return {"best_acc1": self.best_acc1, "last_acc1": last_acc1, "epochs": self.cfg.epochs,
                **{k: str(v) for k, v in self.paths.items()}}


def build_run(cfg: Namespace, info: D.DistInfo) -> PretrainRun:
    """Check the flags and the run folder, then build data, model, monitor, optimizer and schedule,
    and load the ``--resume`` state or the ``--init_from`` weights."""
    check_values(cfg, info.world_size)
    check_recipe(cfg)
    paths = run_paths(cfg)
    hold_run_folder(cfg, paths, info)
    check_run_folder(cfg, paths)
    seed_everything(cfg.seed)
    train_set, val_set = build_pretrain_data(cfg)
    check_first_samples(train_set, val_set)
    warn_validation_on_training_images(cfg, val_set)
    model = build_pretrain_model(cfg)
    channels_last = uses_channels_last(cfg, info.device)
    model = model.to(info.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    monitor = build_monitor(cfg, info, model) if info.is_main else None  # checks its layers before any file is written
    optimizer = build_optimizer(model, cfg)
    run = PretrainRun(cfg, paths, train_set, val_set, model, channels_last, monitor, optimizer,
                      build_scheduler(optimizer, cfg))
    if cfg.resume:
        restore(run, info)
    elif cfg.init_from:
        load_initial_weights(cfg, model, info.device)
    return run


def optimizer_tensors(state: dict | None) -> dict[str, torch.Tensor]:
    """The tensors of an optimizer's state dict by name (``optimizer.<param>.<key>``), e.g. AdamW's moments."""
    per_param = (state or {}).get("state", {})
    return {f"optimizer.{index}.{key}": value for index, values in per_param.items()
            for key, value in values.items() if isinstance(value, torch.Tensor)}


def restore(run: PretrainRun, info: D.DistInfo) -> None:
    """Continue ``--resume``: its weights, optimizer, schedule (the new one, from the epoch reached,
    when the schedule's flags changed), history and RNG states."""
    cfg = run.cfg
    ckpt = load_checkpoint(cfg.resume, map_location=info.device)
    check_same_model(ckpt, run.model, f"--resume {cfg.resume}")
    check_weights_finite(ckpt["state_dict"], f"--resume {cfg.resume}")
    check_weights_finite(optimizer_tensors(ckpt.get("optimizer")), f"--resume {cfg.resume}")
    run.resume = plan_resume(cfg, ckpt, run.paths)
    load_weights(unwrap(run.model), ckpt["state_dict"], f"--resume {cfg.resume}")
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.resume.schedule_changed:  # the new schedule from the epoch reached
        run.scheduler = continue_schedule(run.optimizer, lambda opt: build_scheduler(opt, cfg),
                                          lambda sched, done: step_scheduler(sched, done, cfg), run.resume.epochs_done)
    else:
        run.scheduler.load_state_dict(ckpt["scheduler"])
    run.start_epoch = ckpt["epoch"]
    run.best_acc1 = ckpt["best_acc1"] if ckpt["best_acc1"] is not None else -1.0
    run.history = list(ckpt.get("history", []))
    set_rng_state(ckpt["rng"])
