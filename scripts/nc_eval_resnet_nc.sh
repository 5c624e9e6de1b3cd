#!/usr/bin/env bash
# Neural collapse layer by layer for the NC-controlled ResNet (see nc_eval_resnet.sh).
set -euo pipefail
export EXPT_NAME=${EXPT_NAME:-${ARCH:-resnet18}_in100_nc}
exec bash "$(dirname "$0")/nc_eval_resnet.sh" "$@"
