#!/usr/bin/env bash
# Linear probes on every layer of a ViT-T (or ARCH=vit_small) baseline, same protocol.
set -euo pipefail
ARCH=${ARCH:-vit_tiny}
export ARCH EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
exec bash "$(dirname "$0")/train_lp_resnet.sh" "$@"
