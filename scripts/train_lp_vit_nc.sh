#!/usr/bin/env bash
# Linear probes on every layer of an NC-controlled ViT-T (or ARCH=vit_small), its projector included.
set -euo pipefail
ARCH=${ARCH:-vit_tiny}
export ARCH EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_nc}
exec bash "$(dirname "$0")/train_lp_resnet.sh" "$@"
