#!/usr/bin/env bash
# Pretrain a ViT with NC control (configs/paper/${ARCH}_nc.yaml): ETF projector d -> 4d -> d (ViT-T:
# 192 -> 768 -> 192) and the entropy term. PROJECTOR=random trains with the projector the official ViT
# code actually has (its ETF weights are re-initialized to frozen trunc_normal(0.02) draws): the setting
# behind the paper's ViT numbers.
#   bash scripts/pretrain_vit_nc.sh [pretrain.py flags]   # the official 4 processes (NPROC=4, the default here)
#   PROJECTOR=random ARCH=vit_small bash scripts/pretrain_vit_nc.sh
# Arguments and variables: as scripts/pretrain_resnet.sh (bash scripts/pretrain_resnet.sh --help); ARCH is
# vit_tiny (default) or vit_small.
# Launch caveat: each image is drawn 3 times per epoch (repeated augmentation), the copies dealt to the
# processes in turn. With fewer than 3 processes (NPROC=1 or 2) copies of one image land in the same
# process's batch, where the entropy term (searched within each process's share, as the official ViT) finds
# the image's augmented twin as its nearest neighbour; with 3 or more they land in different processes.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
flags_for pretrain.py "$@"
ARCH=${ARCH:-vit_tiny} NPROC=${NPROC:-4} VARIANT=nc exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
