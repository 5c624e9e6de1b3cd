#!/usr/bin/env bash
# OOD detection for the VGG17 baseline (see ood_det_resnet.sh).
set -euo pipefail
export ARCH=${ARCH:-vgg17}
export EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
exec bash "$(dirname "$0")/ood_det_resnet.sh" "$@"
