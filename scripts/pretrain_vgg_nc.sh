#!/usr/bin/env bash
# Pretrain VGG17 with NC control (configs/paper/vgg17_nc.yaml: ETF projector 512 -> 2048 -> 512 + entropy term).
set -euo pipefail
ARCH=vgg17 VARIANT=nc exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
