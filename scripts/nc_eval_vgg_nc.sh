#!/usr/bin/env bash
# Neural collapse layer by layer for the NC-controlled vgg17 (see nc_eval_resnet.sh).
set -euo pipefail
export ARCH=${ARCH:-vgg17}
export EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_nc}
exec bash "$(dirname "$0")/nc_eval_resnet.sh" "$@"
