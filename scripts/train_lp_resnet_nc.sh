#!/usr/bin/env bash
# Linear probes on every layer of an NC-controlled ResNet (its projector included), same protocol.
#   bash scripts/train_lp_resnet_nc.sh [train_lp.py flags]
# Arguments and variables: as scripts/train_lp_resnet.sh (bash scripts/train_lp_resnet.sh --help).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
flags_for train_lp.py "$@"
export EXPT_NAME=${EXPT_NAME:-${ARCH:-resnet18}_in100_nc}
exec bash "$(dirname "$0")/train_lp_resnet.sh" "$@"
