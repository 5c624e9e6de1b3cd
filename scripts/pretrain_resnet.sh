#!/usr/bin/env bash
# Pretrain a ResNet baseline on ImageNet-100 with the official recipe: configs/paper/${ARCH}_baseline.yaml
# (no projector, no entropy term, BatchNorm). The other pretrain_*.sh scripts reuse this one.
#   bash scripts/pretrain_resnet.sh [pretrain.py flags]
#   ARCH=resnet34 NPROC=4 DATA_DIR=/data/ImageNet-100 bash scripts/pretrain_resnet.sh --epochs 50
# Arguments: pretrain.py flags, which override the recipe file (pretrain.py --help lists them).
# Variables: ARCH (resnet18 | resnet34), DATA_DIR, SAVE_DIR, EXPT_NAME, WORKERS, BS (the global batch),
# NUM_EPOCHS, ALPHA, NORM (bn | gn_ws), PROJECTOR (etf | random), ENTROPY_BATCH (global | local); the launch:
# NPROC (processes per node, default 1), NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, RDZV_ENDPOINT, DRY_RUN
# (1: print the command only); see scripts/_launch.sh.
# Launch caveat: the recipe's batch is global (512), divided over the NPROC processes. With NPROC=1 BatchNorm
# normalizes over the whole batch of 512, whereas the official nn.DataParallel on 4 GPUs normalizes per
# 128-image chunk; NPROC=4 (DistributedDataParallel, 128 per process) matches it.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
flags_for pretrain.py "$@"
pretrain_paper "${ARCH:-resnet18}" "${VARIANT:-baseline}" "$@"
