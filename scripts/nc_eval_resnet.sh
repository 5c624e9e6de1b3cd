#!/usr/bin/env bash
# Measure neural collapse layer by layer on the ImageNet-100 training set with the official protocol
# (scripts/_protocol.sh): the best checkpoint, float32 features, the official hook points (CNNs:
# last_conv and the projector before its L2 normalization, whose probe trains on the normalized
# output as in the official code), classifier metrics from a 30-epoch linear probe per layer (the
# official ViT script eval_nc_ours.sh probes 1 epoch; we do not copy that). The VGG and ViT scripts
# reuse this one.
#   bash scripts/nc_eval_resnet.sh [eval_nc.py flags]      # flags after the name override the protocol's
#   ARCH=resnet34 EXPT_NAME=resnet34_in100_baseline bash scripts/nc_eval_resnet.sh --probe_epochs 5
# Variables: ARCH, EXPT_NAME, CKPT (default ./checkpoints/${ARCH}/best_${EXPT_NAME}.pth), DATA_DIR, INPUT_SIZE,
# OUT_DIR (default ./results/${EXPT_NAME}), SPLITS, PROBE, PROBE_EPOCHS, LAYERS, WORKERS, and the protocol's
# CKPT_WHICH, PRECISION, ENC_LAYER, PROJ_RAW, PROBE_RECIPE (scripts/_protocol.sh); DRY_RUN=1 prints the command.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
flags_for eval_nc.py "$@"
ARCH=${ARCH:-resnet18}
EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
source "$(dirname "$0")/_protocol.sh"
DATA_DIR=${DATA_DIR:-/data/datasets/ImageNet-100}
INPUT_SIZE=${INPUT_SIZE:-224}
OUT_DIR=${OUT_DIR:-./results/${EXPT_NAME}}
SPLITS=${SPLITS:-train}                   # "train test" to measure both
PROBE=${PROBE:---probe}                   # --no-probe: the model's own classifier at its layer
PROBE_EPOCHS=${PROBE_EPOCHS:-30}
LAYERS=${LAYERS:-"$ENC_LAYER $PROJ_RAW"}  # e.g. "layer1 layer2 layer3 last_conv encoder projector_raw projector"
PROBE_FEATURES=()
if [ "$PROJ_RAW" = projector_raw ] && [ "$PROBE" = --probe ]; then PROBE_FEATURES=(--probe_features projector_raw=projector); fi

launch eval_nc.py --ckpt "$CKPT" --names "$EXPT_NAME" --dataset imagenet100 --data "$DATA_DIR" \
    --image_size "$INPUT_SIZE" --splits $SPLITS $PROBE --probe_epochs "$PROBE_EPOCHS" --probe_recipe "$PROBE_RECIPE" ${PROBE_FEATURES[@]+"${PROBE_FEATURES[@]}"} \
    --layers $LAYERS --precision "$PRECISION" --out_dir "$OUT_DIR" --workers "${WORKERS:-8}" "$@"
