#!/usr/bin/env bash
# Pretrain ViT-T or ViT-S on ImageNet-100 (official: lr 8e-4 / 4e-4 at batch 256 x 4 GPUs, drop-path 0.1).
# Baseline: no projector, no entropy term.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
ARCH=${ARCH:-vit_tiny}                    # vit_tiny (192-d) | vit_small (384-d)
DATA_DIR=${DATA_DIR:-/data/datasets/ImageNet-100}
SAVE_DIR=${SAVE_DIR:-./checkpoints/${ARCH}}
EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
NUM_CLASS=${NUM_CLASS:-100}; INPUT_SIZE=${INPUT_SIZE:-224}; PATCH=${PATCH:-16}
if [ "$ARCH" = vit_small ]; then LR=${LR:-4e-4}; else LR=${LR:-8e-4}; fi
WD=${WD:-0.05}; NPROC=${NPROC:-4}; BS=${BS:-$((256 * NPROC))}; NUM_EPOCHS=${NUM_EPOCHS:-100}; DROP_PATH=${DROP_PATH:-0.1}
ALPHA=${ALPHA:-0}; OUTPUT_DIM=${OUTPUT_DIM:-0}; HIDDEN_MLP=${HIDDEN_MLP:-0}
WORKERS=${WORKERS:-8}

launch pretrain.py --arch "$ARCH" --dataset imagenet100 --data "$DATA_DIR" --save_dir "$SAVE_DIR" \
    --num_classes "$NUM_CLASS" --image_size "$INPUT_SIZE" --patch_size "$PATCH" --drop_path "$DROP_PATH" \
    --lr "$LR" --wd "$WD" --epochs "$NUM_EPOCHS" -b "$BS" -j "$WORKERS" \
    --alpha "$ALPHA" --output_dim "$OUTPUT_DIM" --hidden_mlp "$HIDDEN_MLP" --augmentation \
    --ckpt_file "${EXPT_NAME}.pth" --expt_name "$EXPT_NAME" "$@"
