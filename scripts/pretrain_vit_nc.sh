#!/usr/bin/env bash
# Pretrain a ViT with NC control (configs/paper/${ARCH}_nc.yaml): ETF projector d -> 4d -> d (ViT-T:
# 192 -> 768 -> 192) and the entropy term. PROJECTOR=random trains with the projector the official ViT
# code actually has (its ETF weights are re-initialized to frozen trunc_normal(0.02) draws): the setting
# behind the paper's ViT numbers.
set -euo pipefail
ARCH=${ARCH:-vit_tiny} NPROC=${NPROC:-4} VARIANT=nc exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
