#!/usr/bin/env bash
# Pretrain the VGG17 baseline on ImageNet-100 (configs/paper/vgg17_baseline.yaml: the official recipe at lr 0.006).
set -euo pipefail
ARCH=vgg17 exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
