#!/usr/bin/env bash
# Pretrain VGG17 with NC control (configs/paper/vgg17_nc.yaml: ETF projector 512 -> 2048 -> 512 + entropy term,
# GroupNorm + weight standardization).
#   bash scripts/pretrain_vgg_nc.sh [pretrain.py flags]
# Arguments and variables: as scripts/pretrain_resnet.sh (bash scripts/pretrain_resnet.sh --help), ARCH aside.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
flags_for pretrain.py "$@"
ARCH=vgg17 VARIANT=nc exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
