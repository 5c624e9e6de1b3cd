#!/usr/bin/env bash
# Pretrain, on CIFAR-10, the DDU baseline ResNet-18 (configs/ddu_cifar10_baseline.yaml: spectral norm 3.0,
# leaky ReLU, average-pool shortcuts, SGD, 350 epochs) and its L2-normalized twin of Haas, Yolland & Rabus
# (TMLR 2022; configs/ddu_cifar10_l2.yaml: 60 epochs), one model per variant and seed (the paper trains 15).
# Edit the variables (or set them in the environment); ddu_l2_eval.sh and ddu_l2_intervention.sh read the
# checkpoints from SAVE_DIR/<variant>_seed<seed>.pth.
#   bash scripts/ddu_l2_pretrain.sh [pretrain.py flags]        # flags after the name go to every run
# Variables: CIFAR10_DIR, SEEDS, VARIANTS, SAVE_DIR, BS, WORKERS, and the launch's (NPROC, ..., DRY_RUN;
# scripts/_launch.sh).
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
flags_for pretrain.py "$@"
CIFAR10_DIR=${CIFAR10_DIR:-/data/datasets/cifar10}   # holds cifar-10-batches-py/
SEEDS=${SEEDS:-"0 1 2 3 4 5 6 7 8 9 10 11 12 13 14"}
VARIANTS=${VARIANTS:-"baseline l2"}                   # configs/ddu_cifar10_<variant>.yaml
SAVE_DIR=${SAVE_DIR:-./checkpoints/ddu_cifar10}
BS=${BS:-128}
WORKERS=${WORKERS:-8}

for SEED in $SEEDS; do
    for VARIANT in $VARIANTS; do
        launch pretrain.py --config "$ROOT/configs/ddu_cifar10_${VARIANT}.yaml" --data "$CIFAR10_DIR" \
            --seed "$SEED" -b "$BS" -j "$WORKERS" --save_dir "$SAVE_DIR" \
            --ckpt_file "${VARIANT}_seed${SEED}.pth" --expt_name "ddu_${VARIANT}_seed${SEED}" "$@"
    done
done
