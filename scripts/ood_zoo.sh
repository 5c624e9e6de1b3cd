#!/usr/bin/env bash
# The detector zoo on the embedded study: every post-hoc OOD detector of eval_ood.py (all 22 scorers,
# default options) at last_conv, encoder and the projector, for the baseline and ours of each seed of
# scripts/reproduce_embedded.sh, on its evaluation protocol (ID: Fashion-MNIST 0-5 with the study's
# training images; OOD: the held-out classes, Animal-MNIST, digits, textures); then one table of FPR95
# and AUROC per detector and layer, baseline vs ours paired by seed with 95% intervals, a ranking of
# every detector and layer, and the figure (docs/OOD_ZOO.md).
#   bash scripts/ood_zoo.sh                  # checkpoints runs/embedded/seed<N>/{baseline,ours}.pth -> results/ood_zoo/
#   SEEDS="0 1 2" bash scripts/ood_zoo.sh    # a seed without checkpoints is trained first (scripts/demo.sh)
# Arguments: none (-h, --help: this text). Variables: SEEDS, RUNS_BASE (the study's checkpoints), BASE
# (results), CACHE, TRAIN_PER_CLASS and EVAL_PER_CLASS (the study's), SCORERS (default: all), DRY_RUN.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
no_arguments "$@"
export DRY_RUN
[ "$DRY_RUN" = 1 ] || bash scripts/setup.sh

SEEDS=${SEEDS:-"0 1 2 3 4"}
RUNS_BASE=${RUNS_BASE:-runs/embedded}     # the study's checkpoints, seed<N>/baseline.pth and seed<N>/ours.pth
BASE=${BASE:-results/ood_zoo}
CACHE=${CACHE:-cache/features}            # shared with the study: its features are not extracted again
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-250}   # the study's pretraining images per ID class (its NC and probe sets)
EVAL_PER_CLASS=${EVAL_PER_CLASS:-500}     # images per class of every OOD set
SCORERS=${SCORERS:-$("$PY" -c "from ood import SCORERS; print(' '.join(SCORERS))")}

start=$(date +%s)
results=()
for seed in $SEEDS; do
    runs="$RUNS_BASE/seed$seed"
    if [ ! -f "$runs/baseline.pth" ] || [ ! -f "$runs/ours.pth" ]; then
        echo "seed $seed: no checkpoints in $runs; training them with scripts/demo.sh (the study's settings)"
        SEED=$seed RUNS="$runs" OUT="$BASE/train_seed$seed" ARMS="baseline ours" TRAIN_PER_CLASS=$TRAIN_PER_CLASS \
            bash scripts/demo.sh
    fi
    launch eval_ood.py --config configs/embedded_eval.yaml \
        --dataset "fashion_mnist:classes=0-5,max_per_class=$TRAIN_PER_CLASS" --max_per_class "$EVAL_PER_CLASS" \
        --ckpt "$runs/baseline.pth" "$runs/ours.pth" --names baseline ours --seed "$seed" \
        --layers last_conv encoder projector --scorers $SCORERS --no-histograms --bootstrap 0 \
        --cache_dir "$CACHE" --out_dir "$BASE/seed$seed"
    results+=("$BASE/seed$seed/ood.json")
done
launch summarize.py --zoo "${results[@]}" --out_dir "$BASE"
echo "zoo finished in $(( $(date +%s) - start )) s (seeds ${SEEDS// /, }); results in $BASE/"
