#!/usr/bin/env bash
# The main job on the embedded data, on the CPU in minutes: pretrain a baseline and an
# NC-controlled ResNet-18 (width 0.25, 32 px) on 6 Fashion-MNIST classes, then measure neural
# collapse, OOD detection and transfer on both, and summarize them as the paper's Table 1 and Figure 1.
#   bash scripts/demo.sh                      # everything, results in results/demo
#   EPOCHS=2 bash scripts/demo.sh             # quicker; any variable below can be set this way
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/_launch.sh

RUNS=${RUNS:-runs/demo}                   # checkpoints
OUT=${OUT:-results/demo}                  # tables and figures
CACHE=${CACHE:-cache/features}            # extracted features, reused by every evaluator
SEED=${SEED:-0}
EPOCHS=${EPOCHS:-8}
IMAGE_SIZE=${IMAGE_SIZE:-32}
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-500}   # pretraining images per ID class
EVAL_PER_CLASS=${EVAL_PER_CLASS:-500}     # images per class of every evaluation set
PROBE_EPOCHS=${PROBE_EPOCHS:-30}
LAYERS=${LAYERS:-"layer1 layer2 layer3 encoder projector"}   # layer4's average pool is the encoder itself
NC_FLAGS=${NC_FLAGS:-"--alpha 0.05 --output_dim 128 --hidden_mlp 512"}   # projector d -> 4d -> d on the 128-d encoder

start=$(date +%s)
COMMON=(--config configs/embedded_cpu.yaml --save_dir "$RUNS" --seed "$SEED" --epochs "$EPOCHS"
        --image_size "$IMAGE_SIZE" --max_per_class "$TRAIN_PER_CLASS")
launch pretrain.py "${COMMON[@]}" --ckpt_file baseline.pth --expt_name baseline
launch pretrain.py "${COMMON[@]}" --ckpt_file ours.pth --expt_name ours $NC_FLAGS

EVAL=(--config configs/embedded_eval.yaml --ckpt "$RUNS/baseline.pth" "$RUNS/ours.pth" --names baseline ours
      --out_dir "$OUT" --cache_dir "$CACHE" --seed "$SEED" --image_size "$IMAGE_SIZE"
      --max_per_class "$EVAL_PER_CLASS" --probe_epochs "$PROBE_EPOCHS" --layers $LAYERS)
launch eval_nc.py "${EVAL[@]}"
launch eval_ood.py "${EVAL[@]}"
launch train_lp.py "${EVAL[@]}"
launch summarize.py --results "$OUT"
echo "demo finished in $(( $(date +%s) - start )) s (set-up excluded); tables and figures in $OUT/"
