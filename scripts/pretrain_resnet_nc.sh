#!/usr/bin/env bash
# Pretrain a ResNet with NC control (configs/paper/${ARCH}_nc.yaml): the fixed simplex-ETF projector
# (512 -> 2048 -> 512, L2-normalized) and the entropy regularizer (alpha 0.05) on the encoder, with
# GroupNorm + weight standardization as the official NC-controlled CNNs; NORM=bn compares like for like
# with the BatchNorm baseline.
set -euo pipefail
VARIANT=nc exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
