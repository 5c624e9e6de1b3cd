#!/usr/bin/env bash
# Pretrain the ViT-T baseline (ARCH=vit_small for ViT-S) on ImageNet-100 with the official ViT recipe,
# configs/paper/vit.yaml through configs/paper/${ARCH}_baseline.yaml: the lr per 512 images scaled by the
# global batch of 1024 (256 x 4 GPUs), timm's parameter groups and cosine schedule, repeated augmentation,
# drop-path 0.1. docs/FIDELITY.md lists what still differs from the official code.
#   bash scripts/pretrain_vit.sh                  # the official 4 GPUs (NPROC=4, the default here); BS=... for
#                                                 # another global batch
set -euo pipefail
ARCH=${ARCH:-vit_tiny} NPROC=${NPROC:-4} exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
