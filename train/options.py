"""The flags of ``pretrain.py``: every key, its default (the official ImageNet-100 ResNet recipe),
type and help. ``configs/*.yaml`` and the command line override any key; the paper's ten
recipes are files in ``configs/paper/``.

The recipe keys of :mod:`train.recipes` (learning-rate scaling, parameter groups, schedule,
sampler) default to the official CNN recipe; ``configs/paper/vit.yaml`` holds the official ViT one.
"""
from __future__ import annotations

# The recipe's own flags (part of PRETRAIN_DEFAULTS); the defaults are the official CNN recipe.
RECIPE_DEFAULTS: dict = dict(
    lr_base_batch=0, wd_norm_bias=True, warmup_lr=1e-6, min_lr=1e-5, schedule_lag=False, repeated_aug=1,
    drop_last=False, entropy_batch="global",
)
RECIPE_HELP = {
    "lr_base_batch": "> 0: --lr is the rate for a global batch of this many images and the optimizer uses "
                     "lr x batch_size / lr_base_batch (linear scaling; the official ViT code: 512, so its "
                     "lr 8e-4 (ViT-T) / 4e-4 (ViT-S) at 256 x 4 GPUs trained at 1.6e-3 / 8e-4); 0: --lr as given",
    "wd_norm_bias": "weight decay on every parameter (the official CNNs); --no-wd_norm_bias: timm's parameter "
                    "groups, no weight decay on biases and 1-D parameters such as norm weights (the official ViT)",
    "warmup_lr": "--schedule cosine_timm: the lr of the first epoch, from which the warmup rises linearly",
    "min_lr": "--schedule cosine_timm: the lr the cosine ends at",
    "schedule_lag": "--schedule cosine_timm: step the scheduler with the index of the epoch just finished, as the "
                    "official ViT loop does, so each epoch after the first runs at the previous epoch's rate",
    "repeated_aug": "draw each training image this many times per epoch, in different processes when there are "
                    "enough (timm's RepeatAugSampler, also in one process; an epoch then holds "
                    "len(train) // 256 * 256 samples; the official ViT: 3); 1 = off",
    "drop_last": "drop each epoch's last incomplete batch (the official code keeps it; a last batch of a single "
                 "sample is always dropped)",
    "entropy_batch": "global: the entropy term searches neighbours over the batch of all processes (one process's "
                     "result, as the official CNNs' nn.DataParallel); local: within each process's share (the "
                     "official ViT under DistributedDataParallel)",
}


# The official ImageNet-100 ResNet recipe; configs/*.yaml and flags override any key.
PRETRAIN_DEFAULTS: dict = dict(
    arch="resnet18", dataset="imagenet100", data=None, num_classes=100, classes=None, max_per_class=None,
    image_size=224, transform=None, crop_interpolation="auto", stem="imagenet", norm="bn", width=1.0, patch_size=16,
    drop_path=0.0,
    alpha=0.0, output_dim=0, hidden_mlp=0, projector="etf", l2_features=False,
    lr=0.01, wd=0.05, epochs=100, warmup_epochs=5, warmup_start_factor=0.01, batch_size=512,
    label_smoothing=0.1, augmentation=True, fast_decode=True, workers=8, save_dir="checkpoints", ckpt_file="model.pth",
    expt_name="run", seed=0, resume=None, overwrite=False, device="auto", precision="bfloat16",
    optimizer="adamw", momentum=0.9, schedule="cosine", milestones=[], gamma=0.1, val_split=0.0,
    spectral_norm=0.0, activation="relu", shortcut="conv", loss="ce", init_from=None,
    monitor_ood=[], monitor_layers=[], monitor_max_per_class=None, logger=["jsonl"],
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
                          "official code's (torchvision's default, bilinear, for the CNNs and the ViTs alike)",
    "fast_decode": "training crops of JPEG files: drawn from the header's size, decoded by libjpeg-turbo "
                   "(simplejpeg) at 1/2, 1/4 or 1/8 scale when the crop still covers the output size there, else "
                   "at full scale with PIL's pixels (docs/FIDELITY.md); --no-fast_decode: PIL decodes every image "
                   "in full (the official decode). Evaluation always decodes with PIL",
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
    "precision": "arithmetic of the training and validation passes on CUDA: bfloat16 (autocast) or float32 (no "
                 "autocast, as the official CNN pretraining); the CPU runs float32 either way",
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
    "logger": "where each epoch's record is written besides <save_dir>/<ckpt stem>.log.jsonl (always written, "
              "the source of truth): tensorboard (<save_dir>/tensorboard/<ckpt stem>/) and/or wandb (offline under "
              "<save_dir>/wandb/ unless WANDB_MODE says otherwise), e.g. --logger tensorboard wandb; rank 0 only",
    **RECIPE_HELP,
}


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


PRETRAIN_OPTIONS = dict(defaults=PRETRAIN_DEFAULTS, types=PRETRAIN_TYPES, aliases=PRETRAIN_ALIASES, helps=PRETRAIN_HELP)
