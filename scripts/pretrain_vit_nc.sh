#!/usr/bin/env bash
# Pretrain a ViT with NC control: ETF projector d -> 4d -> d (ViT-T: 192 -> 768 -> 192) and entropy reg.
# PROJECTOR=random trains with the projector the official ViT code actually has (its ETF weights are
# re-initialized to frozen trunc_normal(0.02) draws): the setting behind the paper's ViT numbers.
set -euo pipefail
ARCH=${ARCH:-vit_tiny}
if [ "$ARCH" = vit_small ]; then DIM=384; else DIM=192; fi
export ARCH ALPHA=${ALPHA:-0.05} OUTPUT_DIM=${OUTPUT_DIM:-$DIM} HIDDEN_MLP=${HIDDEN_MLP:-$((4 * DIM))}
export EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_nc}
exec bash "$(dirname "$0")/pretrain_vit.sh" "$@"
