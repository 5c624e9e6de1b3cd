#!/usr/bin/env bash
# Pretrain the ViT-T baseline (ARCH=vit_small for ViT-S) on ImageNet-100 with the official ViT recipe,
# configs/paper/vit.yaml through configs/paper/${ARCH}_baseline.yaml: the lr per 512 images scaled by the
# global batch of 1024 (256 x 4 GPUs), timm's parameter groups and cosine schedule, repeated augmentation,
# drop-path 0.1. docs/FIDELITY.md lists what still differs from the official code.
#   bash scripts/pretrain_vit.sh [pretrain.py flags]   # the official 4 processes (NPROC=4, the default here)
#   NPROC=8 BS=2048 bash scripts/pretrain_vit.sh        # another global batch (the lr follows, per 512 images)
# Arguments and variables: as scripts/pretrain_resnet.sh (bash scripts/pretrain_resnet.sh --help); ARCH is
# vit_tiny (default) or vit_small.
# Launch caveat: each image is drawn 3 times per epoch (repeated augmentation), the copies dealt to the
# processes in turn. With fewer than 3 processes (NPROC=1 or 2) copies of one image land in the same
# process's batch, where the entropy term (searched within each process's share, as the official ViT) finds
# the image's augmented twin as its nearest neighbour; with 3 or more they land in different processes.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
flags_for pretrain.py "$@"
ARCH=${ARCH:-vit_tiny} NPROC=${NPROC:-4} exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
