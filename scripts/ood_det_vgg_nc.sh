#!/usr/bin/env bash
# OOD detection for the NC-controlled VGG17 (see ood_det_resnet.sh).
set -euo pipefail
export ARCH=${ARCH:-vgg17}
export EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_nc}
exec bash "$(dirname "$0")/ood_det_resnet.sh" "$@"
