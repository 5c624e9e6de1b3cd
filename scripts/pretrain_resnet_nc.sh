#!/usr/bin/env bash
# Pretrain a ResNet with NC control (configs/paper/${ARCH}_nc.yaml): the fixed simplex-ETF projector
# (512 -> 2048 -> 512, L2-normalized) and the entropy regularizer (alpha 0.05) on the encoder, with
# GroupNorm + weight standardization as the official NC-controlled CNNs; NORM=bn compares like for like
# with the BatchNorm baseline.
#   bash scripts/pretrain_resnet_nc.sh [pretrain.py flags]
#   NPROC=4 ARCH=resnet34 bash scripts/pretrain_resnet_nc.sh
# Arguments and variables: as scripts/pretrain_resnet.sh (bash scripts/pretrain_resnet.sh --help). With
# NORM=bn its caveat holds: NPROC=1 normalizes over the whole global batch, the official code per 128 images.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
flags_for pretrain.py "$@"
VARIANT=nc exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
