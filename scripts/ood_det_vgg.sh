#!/usr/bin/env bash
# OOD detection for the VGG17 baseline (see ood_det_resnet.sh).
#   bash scripts/ood_det_vgg.sh [eval_ood.py flags]
# Arguments and variables: as scripts/ood_det_resnet.sh (bash scripts/ood_det_resnet.sh --help).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
flags_for eval_ood.py "$@"
export ARCH=${ARCH:-vgg17}
export EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
exec bash "$(dirname "$0")/ood_det_resnet.sh" "$@"
