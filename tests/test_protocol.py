"""Protocol settings of the official NC-OOD code that have a switch here (see docs/FIDELITY.md)."""
from __future__ import annotations

import pytest
from torchvision.transforms import InterpolationMode, v2

from core.config import parse_config
from core.errors import UserError
from train.options import PRETRAIN_DEFAULTS, PRETRAIN_TYPES
from train.run import build_pretrain_data


def crop_of(dataset) -> v2.RandomResizedCrop:
    return next(t for t in dataset.transform.transforms if isinstance(t, v2.RandomResizedCrop))


@pytest.mark.parametrize("arch, flag, expected", [
    ("resnet18", "auto", InterpolationMode.BILINEAR),   # official CNN pretraining: torchvision's default
    ("vgg17", "auto", InterpolationMode.BILINEAR),
    ("vit_tiny", "auto", InterpolationMode.BILINEAR),   # official ViT pretraining: vit_exp_all/datasets.py, the same
    ("resnet18", "bicubic", InterpolationMode.BICUBIC),
    ("vit_tiny", "bicubic", InterpolationMode.BICUBIC),
])
def test_training_crop_interpolation_follows_the_official_code_unless_chosen(arch, flag, expected):
    argv = ["--arch", arch, "--dataset", "digits", "--num_classes", "10", "--image_size", "32", "--patch_size", "8",
            "--transform", "imagenet", "--crop_interpolation", flag]
    cfg = parse_config(PRETRAIN_DEFAULTS, argv, types=PRETRAIN_TYPES)
    train, val = build_pretrain_data(cfg)
    assert crop_of(train).interpolation == expected
    assert not any(isinstance(t, v2.RandomResizedCrop) for t in val.transform.transforms)


def test_a_bad_crop_interpolation_is_a_user_error():
    argv = ["--dataset", "digits", "--num_classes", "10", "--crop_interpolation", "nearest"]
    cfg = parse_config(PRETRAIN_DEFAULTS, argv, types=PRETRAIN_TYPES)
    with pytest.raises(UserError, match="--crop_interpolation must be auto, bilinear or bicubic"):
        build_pretrain_data(cfg)
