#!/usr/bin/env bash
# Pretrain ViT-T or ViT-S on ImageNet-100 with the official ViT recipe (vit_exp_all/main_pretrain.py):
# lr scaled by the global batch (lr x batch / 512: LR_BASE 8e-4 (ViT-T) / 4e-4 (ViT-S) at 256 x 4 GPUs
# trains at 1.6e-3 / 8e-4), AdamW without weight decay on biases and 1-D parameters, timm's cosine
# schedule (warmup from 1e-6 over 5 epochs, down to 1e-5), repeated augmentation (3 repeats),
# drop-path 0.1, the entropy term within each process's share of the batch. Baseline: no projector,
# no entropy term. docs/FIDELITY.md lists what still differs from the official code.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
ARCH=${ARCH:-vit_tiny}                    # vit_tiny (192-d) | vit_small (384-d)
DATA_DIR=${DATA_DIR:-/data/datasets/ImageNet-100}
SAVE_DIR=${SAVE_DIR:-./checkpoints/${ARCH}}
EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
NUM_CLASS=${NUM_CLASS:-100}; INPUT_SIZE=${INPUT_SIZE:-224}; PATCH=${PATCH:-16}
# LR_BASE is the lr per 512 images; the optimizer runs at LR_BASE x BS / 512 (printed at the start)
if [ "$ARCH" = vit_small ]; then LR_BASE=${LR_BASE:-4e-4}; else LR_BASE=${LR_BASE:-8e-4}; fi
WD=${WD:-0.05}; NPROC=${NPROC:-4}; BS=${BS:-$((256 * NPROC))}; NUM_EPOCHS=${NUM_EPOCHS:-100}; DROP_PATH=${DROP_PATH:-0.1}
WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}; WARMUP_LR=${WARMUP_LR:-1e-6}; MIN_LR=${MIN_LR:-1e-5}; REPEATS=${REPEATS:-3}
ENTROPY_BATCH=${ENTROPY_BATCH:-local}     # local: per process, as the official ViT under DDP | global: whole batch
PROJECTOR=${PROJECTOR:-etf}               # etf (the method) | random: frozen trunc_normal(0.02), what the official ViT trains
ALPHA=${ALPHA:-0}; OUTPUT_DIM=${OUTPUT_DIM:-0}; HIDDEN_MLP=${HIDDEN_MLP:-0}
WORKERS=${WORKERS:-8}

launch pretrain.py --arch "$ARCH" --dataset imagenet100 --data "$DATA_DIR" --save_dir "$SAVE_DIR" \
    --num_classes "$NUM_CLASS" --image_size "$INPUT_SIZE" --patch_size "$PATCH" --drop_path "$DROP_PATH" \
    --lr "$LR_BASE" --lr_base_batch 512 --wd "$WD" --no-wd_norm_bias --epochs "$NUM_EPOCHS" -b "$BS" -j "$WORKERS" \
    --schedule cosine_timm --warmup_epochs "$WARMUP_EPOCHS" --warmup_lr "$WARMUP_LR" --min_lr "$MIN_LR" \
    --repeated_aug "$REPEATS" --entropy_batch "$ENTROPY_BATCH" \
    --alpha "$ALPHA" --output_dim "$OUTPUT_DIM" --hidden_mlp "$HIDDEN_MLP" --projector "$PROJECTOR" --augmentation \
    --ckpt_file "${EXPT_NAME}.pth" --expt_name "$EXPT_NAME" "$@"
