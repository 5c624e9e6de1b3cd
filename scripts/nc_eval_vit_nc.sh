#!/usr/bin/env bash
# Neural collapse layer by layer for the NC-controlled vit_tiny (see nc_eval_resnet.sh).
#   bash scripts/nc_eval_vit_nc.sh [eval_nc.py flags]
# Arguments and variables: as scripts/nc_eval_resnet.sh (bash scripts/nc_eval_resnet.sh --help).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
flags_for eval_nc.py "$@"
export ARCH=${ARCH:-vit_tiny}
export EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_nc}
exec bash "$(dirname "$0")/nc_eval_resnet.sh" "$@"
