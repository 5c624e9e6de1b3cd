#!/usr/bin/env bash
# The main job on the embedded data, on the CPU in minutes: pretrain a baseline and an
# NC-controlled ResNet-18 (width 0.25, 32 px) on 250 images of each of 6 Fashion-MNIST classes for
# 20 epochs (the study's settings, one seed), logging the collapse of
# their layers every epoch; then measure neural collapse, OOD detection and transfer on both,
# summarize them as the paper's Table 1 and Figure 1, and say which of its four claims hold.
#   bash scripts/demo.sh                      # everything, results in results/demo
#   EPOCHS=2 bash scripts/demo.sh             # quicker; any variable below can be set this way
#   ARMS="baseline entropy projector ours" bash scripts/demo.sh    # the whole 2 x 2 on one seed
# scripts/reproduce_embedded.sh runs this once per seed (the study); docs/REPRODUCTION.md explains
# how its settings were chosen (scripts/sweep_embedded.sh: the training-length sweep).
# Arguments: none (-h, --help: this text). Variables: those below (RUNS, OUT, CACHE, SEED, EPOCHS, IMAGE_SIZE,
# TRAIN_PER_CLASS, EVAL_PER_CLASS, PROBE_EPOCHS, ARMS, ALPHA, PROJECTOR_FLAGS, LAYERS, MONITOR_LAYERS,
# MONITOR_PER_CLASS) and DRY_RUN (1: print the commands only). A second demo into the same RUNS replaces its runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_common.sh
no_arguments "$@"
bash scripts/setup.sh
source scripts/_launch.sh

RUNS=${RUNS:-runs/demo}                   # checkpoints and training logs
OUT=${OUT:-results/demo}                  # tables and figures
CACHE=${CACHE:-cache/features}            # extracted features, reused by every evaluator
SEED=${SEED:-0}
EPOCHS=${EPOCHS:-20}
IMAGE_SIZE=${IMAGE_SIZE:-32}
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-250}   # pretraining images per ID class
EVAL_PER_CLASS=${EVAL_PER_CLASS:-500}     # images per class of every OOD and transfer set
PROBE_EPOCHS=${PROBE_EPOCHS:-30}
# The arms of the 2 x 2: baseline (neither), entropy (the entropy term alone), projector (the
# fixed ETF projector alone), ours (both). Same data, model and normalization in every arm.
ARMS=${ARMS:-"baseline ours"}
ALPHA=${ALPHA:-0.05}                                          # entropy-term weight of the entropy arms
PROJECTOR_FLAGS=${PROJECTOR_FLAGS:-"--output_dim 128 --hidden_mlp 512"}   # projector d -> 4d -> d on the 128-d encoder
# Evaluated layers: the stages for Figure 1 (layer4's average pool is the encoder), the paper's hook
# point last_conv (the last convolution before its norm, residual add and ReLU), the pooled embedding,
# and the projector before (NC, transfer) and after (OOD) its L2 normalization; baselines skip the projector.
LAYERS=${LAYERS:-"layer1 layer2 layer3 last_conv encoder projector_raw projector"}
MONITOR_LAYERS=${MONITOR_LAYERS:-"last_conv encoder projector_raw projector"}   # collapse logged every epoch
MONITOR_PER_CLASS=${MONITOR_PER_CLASS:-50}                  # the fixed training images it measures, per class

arm_flags() {
    case "$1" in
        baseline) ;;
        entropy) echo "--alpha $ALPHA" ;;
        projector) echo "$PROJECTOR_FLAGS" ;;
        ours) echo "--alpha $ALPHA $PROJECTOR_FLAGS" ;;
        *) echo "error: unknown arm '$1' in ARMS; the arms are baseline, entropy, projector, ours" >&2; return 2 ;;
    esac
}

cpu_seconds() {  # user + system seconds of the processes this script has run so far, into $cpu
    times > "$TIMES"   # in this shell: a command substitution would count a fresh process
    cpu=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } printf "%.1f", s }' "$TIMES")
}

for arm in $ARMS; do arm_flags "$arm" >/dev/null || exit 2; done

TIMES=$(mktemp); trap 'rm -f "$TIMES"' EXIT
cpu_seconds; cpu_start=$cpu
start=$(date +%s)
COMMON=(--config configs/embedded_cpu.yaml --save_dir "$RUNS" --seed "$SEED" --epochs "$EPOCHS"
        --image_size "$IMAGE_SIZE" --max_per_class "$TRAIN_PER_CLASS"
        --monitor_layers $MONITOR_LAYERS --monitor_max_per_class "$MONITOR_PER_CLASS"
        --overwrite)   # a second demo into the same RUNS replaces its runs
ckpts=()
for arm in $ARMS; do
    flags=$(arm_flags "$arm")
    launch pretrain.py "${COMMON[@]}" --ckpt_file "$arm.pth" --expt_name "$arm" $flags
    ckpts+=("$RUNS/$arm.pth")
done
trained=$(date +%s); cpu_seconds; cpu_trained=$cpu

# The ID sets are exactly the pretraining ones (its TRAIN_PER_CLASS images per class, drawn by the seed,
# and as many test images), so that NC "on the training data" is on the data the models learned;
# EVAL_PER_CLASS caps the OOD and transfer sets.
ID_SPEC="fashion_mnist:classes=0-5,max_per_class=$TRAIN_PER_CLASS"
EVAL=(--config configs/embedded_eval.yaml --dataset "$ID_SPEC" --ckpt "${ckpts[@]}" --names $ARMS
      --out_dir "$OUT" --cache_dir "$CACHE" --seed "$SEED" --image_size "$IMAGE_SIZE"
      --max_per_class "$EVAL_PER_CLASS" --probe_epochs "$PROBE_EPOCHS" --layers $LAYERS)
launch eval_nc.py "${EVAL[@]}"
launch eval_ood.py "${EVAL[@]}"
launch train_lp.py "${EVAL[@]}"
launch summarize.py --results "$OUT" --runs "$RUNS"
end=$(date +%s); cpu_seconds; cpu_end=$cpu
if [ "$DRY_RUN" != 1 ]; then   # wall seconds, and CPU seconds (user + system: what the load does not inflate)
    printf '{"seconds": %d, "train_seconds": %d, "eval_seconds": %d, "train_cpu_seconds": %s, "eval_cpu_seconds": %s, "threads": "%s", "arms": "%s", "epochs": %d, "train_per_class": %d}\n' \
        $((end - start)) $((trained - start)) $((end - trained)) \
        "$(awk "BEGIN { print $cpu_trained - $cpu_start }")" "$(awk "BEGIN { print $cpu_end - $cpu_trained }")" \
        "${OMP_NUM_THREADS:-default}" "$ARMS" "$EPOCHS" "$TRAIN_PER_CLASS" > "$OUT/timing.json.tmp"
    mv "$OUT/timing.json.tmp" "$OUT/timing.json"
fi
echo "demo finished in $((end - start)) s (set-up excluded; training $((trained - start)) s, evaluation" \
     "$((end - trained)) s); tables and figures in $OUT/"
