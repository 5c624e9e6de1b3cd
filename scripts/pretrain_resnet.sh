#!/usr/bin/env bash
# Pretrain a ResNet on ImageNet-100 (the official recipe). Baseline: no projector, no entropy term.
# Edit the variables (or set them in the environment); pretrain_resnet_nc.sh reuses this script.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
ARCH=${ARCH:-resnet18}                    # resnet18 | resnet34
DATA_DIR=${DATA_DIR:-/data/datasets/ImageNet-100}   # holds train/ and val/ class folders
SAVE_DIR=${SAVE_DIR:-./checkpoints/${ARCH}}
EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
NUM_CLASS=${NUM_CLASS:-100}
INPUT_SIZE=${INPUT_SIZE:-224}
LR=${LR:-0.01}; WD=${WD:-0.05}; BS=${BS:-512}; NUM_EPOCHS=${NUM_EPOCHS:-100}
NORM=${NORM:-bn}                          # the official baselines use BatchNorm; gn_ws for a like-for-like comparison
ALPHA=${ALPHA:-0}; OUTPUT_DIM=${OUTPUT_DIM:-0}; HIDDEN_MLP=${HIDDEN_MLP:-0}
NPROC=${NPROC:-1}                         # GPUs on this node (torchrun + DistributedDataParallel when > 1)
WORKERS=${WORKERS:-8}

launch pretrain.py --arch "$ARCH" --dataset imagenet100 --data "$DATA_DIR" --save_dir "$SAVE_DIR" \
    --num_classes "$NUM_CLASS" --image_size "$INPUT_SIZE" --stem imagenet --norm "$NORM" \
    --lr "$LR" --wd "$WD" --epochs "$NUM_EPOCHS" -b "$BS" -j "$WORKERS" \
    --alpha "$ALPHA" --output_dim "$OUTPUT_DIM" --hidden_mlp "$HIDDEN_MLP" --augmentation \
    --ckpt_file "${EXPT_NAME}.pth" --expt_name "$EXPT_NAME" "$@"
