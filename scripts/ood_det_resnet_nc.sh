#!/usr/bin/env bash
# OOD detection for the NC-controlled ResNet (see ood_det_resnet.sh).
set -euo pipefail
export EXPT_NAME=${EXPT_NAME:-${ARCH:-resnet18}_in100_nc}
exec bash "$(dirname "$0")/ood_det_resnet.sh" "$@"
