#!/usr/bin/env bash
# Neural collapse layer by layer for the vit_tiny baseline (see nc_eval_resnet.sh; ARCH=vit_small for ViT-S).
set -euo pipefail
export ARCH=${ARCH:-vit_tiny}
export EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
exec bash "$(dirname "$0")/nc_eval_resnet.sh" "$@"
