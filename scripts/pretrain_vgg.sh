#!/usr/bin/env bash
# Pretrain the VGG17 baseline on ImageNet-100 (configs/paper/vgg17_baseline.yaml: the official recipe at lr 0.006).
#   bash scripts/pretrain_vgg.sh [pretrain.py flags]
# Arguments and variables: as scripts/pretrain_resnet.sh (bash scripts/pretrain_resnet.sh --help), ARCH aside.
# Launch caveat: with NPROC=1 BatchNorm normalizes over the whole global batch of 512; the official
# nn.DataParallel on 4 GPUs normalizes per 128-image chunk (NPROC=4 matches it).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
flags_for pretrain.py "$@"
ARCH=vgg17 exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
