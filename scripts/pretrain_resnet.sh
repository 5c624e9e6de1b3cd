#!/usr/bin/env bash
# Pretrain a ResNet baseline on ImageNet-100 with the official recipe: configs/paper/${ARCH}_baseline.yaml
# (no projector, no entropy term, BatchNorm). The other pretrain_*.sh scripts reuse this one.
#   ARCH=resnet34 NPROC=4 DATA_DIR=/data/ImageNet-100 bash scripts/pretrain_resnet.sh [pretrain.py flags]
# The variables (paths, process counts, switches) are listed in scripts/_launch.sh (pretrain_paper).
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
pretrain_paper "${ARCH:-resnet18}" "${VARIANT:-baseline}" "$@"
