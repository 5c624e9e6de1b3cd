#!/usr/bin/env bash
# Pretrain VGG17 on ImageNet-100 (the official recipe: lr 0.006). Baseline: no projector, no entropy term.
set -euo pipefail
export ARCH=vgg17 LR=${LR:-0.006}
export EXPT_NAME=${EXPT_NAME:-vgg17_in100_baseline}
exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
