#!/usr/bin/env bash
# Pretrain a ResNet with NC control: fixed simplex-ETF projector (512 -> 2048 -> 512, L2-normalized)
# and the entropy regularizer (alpha 0.05) on the encoder. GroupNorm + weight standardization, as the
# official NC-controlled CNNs; set NORM=bn to compare like for like with the BatchNorm baseline.
set -euo pipefail
export ALPHA=${ALPHA:-0.05} OUTPUT_DIM=${OUTPUT_DIM:-512} HIDDEN_MLP=${HIDDEN_MLP:-2048} NORM=${NORM:-gn_ws}
export EXPT_NAME=${EXPT_NAME:-${ARCH:-resnet18}_in100_nc}
exec bash "$(dirname "$0")/pretrain_resnet.sh" "$@"
