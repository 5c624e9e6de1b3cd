#!/usr/bin/env bash
# Linear probes on every layer of an NC-controlled VGG17 (its projector included), same protocol.
#   bash scripts/train_lp_vgg_nc.sh [train_lp.py flags]
# Arguments and variables: as scripts/train_lp_resnet.sh (bash scripts/train_lp_resnet.sh --help).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
flags_for train_lp.py "$@"
export ARCH=vgg17 EXPT_NAME=${EXPT_NAME:-vgg17_in100_nc}
exec bash "$(dirname "$0")/train_lp_resnet.sh" "$@"
