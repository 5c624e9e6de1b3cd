"""The default configuration of every architecture, as timm keeps one per model.

One table, :data:`ARCHS`, answers for each registered architecture what the rest of the toolkit
would otherwise guess from its name:

- ``family``: ``cnn`` or ``vit``;
- ``options``: the build options its builder takes (every builder also receives ``in_chans`` and
  ``img_size``); :func:`models.build_model` refuses any other option away from its default, with
  ``declines[option]`` as the reason where one is given;
- ``crop_interpolation``: the training RandomResizedCrop's interpolation in the official code,
  what ``--crop_interpolation auto`` picks: torchvision's default, bilinear, in the CNN and the ViT
  pretraining alike (``vit_exp_all/datasets.py`` builds a plain ``RandomResizedCrop(size)``);
- ``channels_last``: NHWC memory format on CUDA (faster convolutions and bf16 for the CNNs);
- ``hook_layer``: the encoder layer the official evaluation reads: ``last_conv`` for the CNNs (the
  last convolution before its norm, residual add and ReLU), ``encoder`` for the ViTs (the pooled,
  normed patch tokens);
- ``projector_layer``: where the official NC and transfer evaluations read the projector:
  ``projector_raw`` (before its L2 normalization) for the CNNs, ``projector`` (after it) for the ViTs;
- ``probe_recipe``: the official linear-probe recipe, ``cnn`` or ``vit`` (:mod:`evaluate.probe`);
- ``cifar_stats``: how the official evaluation normalizes CIFAR: with its own channel statistics
  (``own``, the CNN code) or ImageNet's (``imagenet``, the ViT code).

This module imports only the standard library, so the experiment scripts read it without
loading torch: ``python models/defaults.py resnet18`` prints the protocol variables of
``scripts/_protocol.sh`` as shell assignments.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ArchDefaults:
    """The default configuration of one architecture (see the module docstring)."""

    family: str
    options: tuple[str, ...]
    crop_interpolation: str
    channels_last: bool
    hook_layer: str
    projector_layer: str
    probe_recipe: str
    cifar_stats: str
    declines: dict[str, str] = field(default_factory=dict)


RESNET_OPTIONS = ("norm", "stem", "width", "spectral_norm", "activation", "shortcut")
CNN = dict(family="cnn", crop_interpolation="bilinear", channels_last=True, hook_layer="last_conv",
           projector_layer="projector_raw", probe_recipe="cnn", cifar_stats="own")
VIT = dict(family="vit", options=("patch_size", "drop_path", "class_token", "pos_embed", "global_pool"),
           crop_interpolation="bilinear", channels_last=False, hook_layer="encoder", projector_layer="projector",
           probe_recipe="vit", cifar_stats="imagenet",
           declines={"norm": "it uses LayerNorm; norm applies to CNNs only",
                     "stem": "it has a patch embedding, not a CNN stem; for small images set patch_size "
                             "(e.g. img_size=32, patch_size=8)",
                     "width": "it has a fixed width; width applies to CNNs only"})

ARCHS: dict[str, ArchDefaults] = {
    "resnet18": ArchDefaults(options=RESNET_OPTIONS, **CNN),
    "resnet34": ArchDefaults(options=RESNET_OPTIONS, **CNN),
    "vgg17": ArchDefaults(options=("norm", "stem", "width", "conv_bias"), **CNN),
    "vit_tiny": ArchDefaults(**VIT),
    "vit_small": ArchDefaults(**VIT),
}


def arch_defaults(arch: str) -> ArchDefaults:
    """The default configuration of ``arch``; a ValueError listing the known names otherwise."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid names: {', '.join(sorted(ARCHS))}")
    return ARCHS[arch]


def shell_assignments(arch: str) -> str:
    """``DEFAULT_HOOK_LAYER=... DEFAULT_PROJECTOR_LAYER=... DEFAULT_PROBE_RECIPE=... DEFAULT_CIFAR_STATS=...``,
    the evaluation protocol of ``arch`` for ``scripts/_protocol.sh``."""
    d = arch_defaults(arch)
    return (f"DEFAULT_HOOK_LAYER={d.hook_layer} DEFAULT_PROJECTOR_LAYER={d.projector_layer} "
            f"DEFAULT_PROBE_RECIPE={d.probe_recipe} DEFAULT_CIFAR_STATS={d.cifar_stats}")


if __name__ == "__main__":
    try:
        print(shell_assignments(sys.argv[1] if len(sys.argv) > 1 else ""))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
