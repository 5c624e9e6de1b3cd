#!/usr/bin/env bash
# Does ID variability collapse predict transfer (Xu & Liu, ICML 2023)? Sweep one pretraining knob on the
# embedded data (default: the entropy weight alpha, NC projector on), probe every checkpoint on the
# downstream sets, then correlate VCI / NC1 / CDNV of the ID train features with the log-odds gain
# logit(probe top-1) - logit(ID top-1) across the checkpoints (Pearson and Spearman, table + scatter plots).
#   bash scripts/vci_study.sh                                  # results in results/vci_study/
#   EPOCHS=4 TRAIN_PER_CLASS=300 VALUES="0 0.05 0.2" bash scripts/vci_study.sh
#   KNOB=label_smoothing VALUES="0 0.1 0.2 0.3" NC_FLAGS= bash scripts/vci_study.sh   # any pretrain.py flag
# Arguments: none (-h, --help: this text). Variables: those below and DRY_RUN (1: print the commands only).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
no_arguments "$@"
[ "$DRY_RUN" = 1 ] || bash scripts/setup.sh   # a dry run (DRY_RUN=1: print the commands) installs nothing

EPOCHS=${EPOCHS:-6}
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-500}   # pretraining images per ID class
KNOB=${KNOB:-alpha}                       # the pretrain.py flag that is swept
VALUES=${VALUES:-"0 0.02 0.05 0.1 0.2"}   # its values, one checkpoint each (at least 3 for a correlation)
NC_FLAGS=${NC_FLAGS-"--output_dim 128 --hidden_mlp 512"}    # flags every run shares (here: the NC projector)
EVAL_PER_CLASS=${EVAL_PER_CLASS:-500}     # images per class of the ID and downstream sets
PROBE_EPOCHS=${PROBE_EPOCHS:-30}
LAYER=${LAYER:-encoder}                   # the layer probed and compared
IMAGE_SIZE=${IMAGE_SIZE:-32}
SEED=${SEED:-0}
RUNS=${RUNS:-runs/vci_study}              # checkpoints
OUT=${OUT:-results/vci_study}             # tables and figures
CACHE=${CACHE:-cache/features}            # extracted features, shared with the other evaluators

start=$(date +%s)
ckpts=(); names=()
for value in $VALUES; do
    name="${KNOB}_${value}"
    launch pretrain.py --config configs/embedded_cpu.yaml --save_dir "$RUNS" --ckpt_file "$name.pth" \
        --expt_name "$name" --seed "$SEED" --epochs "$EPOCHS" --image_size "$IMAGE_SIZE" \
        --max_per_class "$TRAIN_PER_CLASS" --overwrite $NC_FLAGS "--$KNOB" "$value"   # a second study replaces its runs
    ckpts+=("$RUNS/$name.pth"); names+=("$name")
done
launch train_lp.py --config configs/embedded_eval.yaml --ckpt "${ckpts[@]}" --names "${names[@]}" \
    --layers "$LAYER" --out_dir "$OUT" --cache_dir "$CACHE" --seed "$SEED" --image_size "$IMAGE_SIZE" \
    --max_per_class "$EVAL_PER_CLASS" --probe_epochs "$PROBE_EPOCHS"
launch vci_study.py --results "$OUT" --layer "$LAYER"
echo "VCI study finished in $(( $(date +%s) - start )) s (set-up excluded); tables and figures in $OUT/"
