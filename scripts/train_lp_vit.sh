#!/usr/bin/env bash
# Linear probes on every layer of a ViT-T (or ARCH=vit_small) baseline, same protocol.
#   bash scripts/train_lp_vit.sh [train_lp.py flags]
# Arguments and variables: as scripts/train_lp_resnet.sh (bash scripts/train_lp_resnet.sh --help).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
flags_for train_lp.py "$@"
ARCH=${ARCH:-vit_tiny}
export ARCH EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
exec bash "$(dirname "$0")/train_lp_resnet.sh" "$@"
