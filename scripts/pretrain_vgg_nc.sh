#!/usr/bin/env bash
# Pretrain VGG17 with NC control (ETF projector 512 -> 2048 -> 512 + entropy regularizer, alpha 0.05).
set -euo pipefail
export ARCH=vgg17 LR=${LR:-0.006}
export EXPT_NAME=${EXPT_NAME:-vgg17_in100_nc}
exec bash "$(dirname "$0")/pretrain_resnet_nc.sh" "$@"
