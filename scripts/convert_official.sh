#!/usr/bin/env bash
# Convert a checkpoint of the official NC-OOD code (or a torchvision ResNet / timm ViT state_dict) into an
# nc-ood checkpoint, e.g. to fine-tune it with pretrain.py --init_from. The evaluators read such files
# directly. Architecture and projector are read from the tensors' shapes; set ARCH, OUTPUT_DIM and
# HIDDEN_MLP to insist on them, INPUT_SIZE for an official ViT trained at another size than 224 px.
#   SRC=supervised_dnn/best_resnet18_nc.pth OUT=checkpoints/resnet18_nc.pth bash scripts/convert_official.sh [convert.py flags]
# Variables: SRC, OUT, ARCH, OUTPUT_DIM, HIDDEN_MLP, INPUT_SIZE, DRY_RUN (1: print the command only).
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
flags_for convert.py "$@"
SRC=${SRC:-./results_official/best_resnet18_in100_nc.pth}
OUT=${OUT:-./checkpoints/converted/$(basename "$SRC")}
flags=()                                  # only what is set: everything else is inferred
if [ -n "${ARCH:-}" ]; then flags+=(--arch "$ARCH"); fi                 # resnet18 | resnet34 | vgg17 | vit_tiny | vit_small
if [ -n "${OUTPUT_DIM:-}" ]; then flags+=(--output_dim "$OUTPUT_DIM"); fi
if [ -n "${HIDDEN_MLP:-}" ]; then flags+=(--hidden_mlp "$HIDDEN_MLP"); fi
if [ -n "${INPUT_SIZE:-}" ]; then flags+=(--image_size "$INPUT_SIZE"); fi

launch convert.py --ckpt "$SRC" --out "$OUT" ${flags[@]+"${flags[@]}"} "$@"
