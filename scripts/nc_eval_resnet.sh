#!/usr/bin/env bash
# Measure neural collapse layer by layer on the ImageNet-100 training set (the paper's protocol:
# classifier metrics from a linear probe per layer). Edit the variables or set them in the environment.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
ARCH=${ARCH:-resnet18}
EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
CKPT=${CKPT:-./checkpoints/${ARCH}/${EXPT_NAME}.pth}
DATA_DIR=${DATA_DIR:-/data/datasets/ImageNet-100}
INPUT_SIZE=${INPUT_SIZE:-224}
OUT_DIR=${OUT_DIR:-./results/${EXPT_NAME}}
SPLITS=${SPLITS:-train}                   # "train test" to measure both
PROBE=${PROBE:---probe}                   # --no-probe: the model's own classifier at its layer

launch eval_nc.py --ckpt "$CKPT" --names "$EXPT_NAME" --dataset imagenet100 --data "$DATA_DIR" \
    --image_size "$INPUT_SIZE" --splits $SPLITS $PROBE --out_dir "$OUT_DIR" --workers 8 "$@"
