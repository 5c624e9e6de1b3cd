#!/usr/bin/env bash
# The NC-loss intervention of Haas, Yolland & Rabus (TMLR 2022): from a trained DDU CIFAR-10 checkpoint
# (ddu_l2_pretrain.sh), train on with the NC loss alone (LOSS=nc: NC1 + equinorm + equiangularity of means
# and classifier + NC3, no cross-entropy) and, as the control, with cross-entropy (LOSS=ce) from the same
# weights at the same constant lr. After every epoch the monitor logs, into <save_dir>/<name>.log.jsonl, the
# NC metrics of the training features and the GMM (DDU) AUROC and false positives (OOD samples among the
# N_ID highest scores) per OOD set. EPOCHS and LR are this script's choices; set them as you need.
#   bash scripts/ddu_l2_intervention.sh [pretrain.py flags]    # flags after the name go to every run
# Variables: CIFAR10_DIR, SVHN_DIR, CIFAR100_DIR, TINY_DIR, VARIANT, SEED, INIT_CKPT, LOSSES, EPOCHS, LR,
# MONITOR_MAX_PER_CLASS, SAVE_DIR, WORKERS, and the launch's (NPROC, ..., DRY_RUN; scripts/_launch.sh).
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
flags_for pretrain.py "$@"
CIFAR10_DIR=${CIFAR10_DIR:-/data/datasets/cifar10}
SVHN_DIR=${SVHN_DIR:-/data/datasets/svhn}
CIFAR100_DIR=${CIFAR100_DIR:-/data/datasets/cifar100}
TINY_DIR=${TINY_DIR:-/data/datasets/tiny-imagenet-200}
VARIANT=${VARIANT:-l2}                                 # the recipe of the starting checkpoint: baseline or l2
SEED=${SEED:-0}
INIT_CKPT=${INIT_CKPT:-./checkpoints/ddu_cifar10/${VARIANT}_seed${SEED}.pth}
LOSSES=${LOSSES:-"nc ce"}
EPOCHS=${EPOCHS:-10}
LR=${LR:-0.001}                                        # constant (no milestones); the L2 recipe's final lr
MONITOR_MAX_PER_CLASS=${MONITOR_MAX_PER_CLASS:-1000}   # training samples per class the monitor measures
SAVE_DIR=${SAVE_DIR:-./checkpoints/ddu_cifar10_intervention}
WORKERS=${WORKERS:-8}

for LOSS in $LOSSES; do
    launch pretrain.py --config "$ROOT/configs/ddu_cifar10_${VARIANT}.yaml" --data "$CIFAR10_DIR" --seed "$SEED" \
        --init_from "$INIT_CKPT" --loss "$LOSS" --epochs "$EPOCHS" --lr "$LR" --milestones \
        --monitor_ood "svhn:root=$SVHN_DIR,transform=small" "cifar100:root=$CIFAR100_DIR,transform=small" \
                      "tiny_imagenet=imagefolder:root=$TINY_DIR,transform=small" \
        --monitor_max_per_class "$MONITOR_MAX_PER_CLASS" -j "$WORKERS" --save_dir "$SAVE_DIR" \
        --ckpt_file "${VARIANT}_seed${SEED}_${LOSS}.pth" --expt_name "ddu_${VARIANT}_seed${SEED}_${LOSS}" "$@"
done
