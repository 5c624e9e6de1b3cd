#!/usr/bin/env bash
# OOD detection for the ViT-T (ARCH=vit_small for ViT-S) baseline (see ood_det_resnet.sh).
set -euo pipefail
export ARCH=${ARCH:-vit_tiny}
export EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
exec bash "$(dirname "$0")/ood_det_resnet.sh" "$@"
