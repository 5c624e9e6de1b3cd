#!/usr/bin/env bash
# The control knob, measured: the entropy weight alpha in ALPHAS (default 0 0.05 0.1 0.2 0.5 1.0), the
# fixed ETF projector off and on, over SEEDS (default 0 1 2) at the embedded study's settings (scripts/demo.sh:
# 250 images per class, 20 epochs, BatchNorm), plus the GroupNorm + weight-standardization baseline (alpha 0,
# no projector) and ours (alpha 0.05, projector) of the normalization pairings. Each seed's models are
# evaluated at last_conv, encoder and the projector (NC, the paper's OOD protocol, transfer) and summarized;
# then summarize.py --knob writes the table (each quantity's mean and 95% interval over seeds, claim (1)
# against the baseline at every alpha), its figure and the pairings' four claims (docs/REPRODUCTION.md).
#   bash scripts/sweep_alpha.sh                 # -> results/sweep_alpha/knob.{json,csv,md}, knob.png, pairings.*
#   JOBS=2 bash scripts/sweep_alpha.sh          # two trainings, then two evaluations, at a time, one thread
#                                               # each (as the docs ran it); their output in BASE/logs/
#   STUDY_RUNS=runs/embedded bash scripts/sweep_alpha.sh   # reuse the study's four arms of each seed
#   ALPHAS="0 0.2" SEEDS=0 EPOCHS=4 bash scripts/sweep_alpha.sh   # a quick look
# Cost on a 2-core CPU (docs/REPRODUCTION.md): 73 min with JOBS=2 and STUDY_RUNS; about 85-90 min (estimated)
# with JOBS=2 alone; JOBS=1 is slower there (one run at a time cannot keep both cores busy).
# A rerun continues: a finished model is not trained again (pretrain.py --resume does nothing) and its
# evaluation is redone from the feature cache. STUDY_RUNS (optional) holds seed<N>/{baseline,entropy,projector,
# ours}.pth of scripts/reproduce_embedded.sh, i.e. alpha 0 / 0.05 with the projector off / on; they are copied
# in and resumed, so a model trained with other settings is refused in one line.
# Arguments: none (-h, --help: this text). Variables: ALPHAS, SEEDS, JOBS (>= 1), BASE, RUNS_BASE, STUDY_RUNS,
# EPOCHS, TRAIN_PER_CLASS, EVAL_PER_CLASS, PROBE_EPOCHS, CACHE, DRY_RUN.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
no_arguments "$@"
int_var JOBS 1
export DRY_RUN
[ "$DRY_RUN" = 1 ] || bash scripts/setup.sh

ALPHAS=${ALPHAS:-"0 0.05 0.1 0.2 0.5 1.0"}
SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-1}
BASE=${BASE:-results/sweep_alpha}
RUNS_BASE=${RUNS_BASE:-runs/sweep_alpha}
STUDY_RUNS=${STUDY_RUNS:-}
EPOCHS=${EPOCHS:-20}
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-250}
EVAL_PER_CLASS=${EVAL_PER_CLASS:-500}
PROBE_EPOCHS=${PROBE_EPOCHS:-30}
CACHE=${CACHE:-cache/features}
PROJECTOR_FLAGS="--output_dim 128 --hidden_mlp 512"   # d -> 4d -> d on the 128-d encoder, as the demo
declare -A STUDY_ARM=([0_off]=baseline [0.05_off]=entropy [0_on]=projector [0.05_on]=ours)

models() {  # name alpha projector(on|off) norm(bn|gn_ws), one model a line
    for alpha in $ALPHAS; do
        for projector in off on; do echo "alpha${alpha}_$projector $alpha $projector bn"; done
    done
    echo "alpha0_off_gn 0 off gn_ws"
    echo "alpha0.05_on_gn 0.05 on gn_ws"
}

train() {  # seed name alpha projector norm
    local seed=$1 name=$2 alpha=$3 projector=$4 norm=$5 runs="$RUNS_BASE/seed$1" resume=()
    local arm="${STUDY_ARM[${alpha}_$projector]:-}"
    if [ -n "$STUDY_RUNS" ] && [ "$norm" = bn ] && [ -n "$arm" ] && [ -f "$STUDY_RUNS/seed$seed/$arm.pth" ] \
            && [ ! -f "$runs/$name.pth" ] && [ "$DRY_RUN" != 1 ]; then
        mkdir -p "$runs" && cp "$STUDY_RUNS/seed$seed/$arm.pth" "$runs/$name.pth"
    fi
    if [ -f "$runs/$name.pth" ]; then resume=(--resume "$runs/$name.pth"); fi
    local flags=(--alpha "$alpha" --norm "$norm")
    if [ "$projector" = on ]; then flags+=($PROJECTOR_FLAGS); fi
    launch pretrain.py --config configs/embedded_cpu.yaml --save_dir "$runs" --seed "$seed" --epochs "$EPOCHS" \
        --image_size 32 --max_per_class "$TRAIN_PER_CLASS" --ckpt_file "$name.pth" --expt_name "$name" \
        "${flags[@]}" ${resume[@]+"${resume[@]}"}
}

evaluate() {  # seed evaluator: one evaluator (eval_nc.py, eval_ood.py or train_lp.py) on every model of the seed
    local seed=$1 evaluator=$2 runs="$RUNS_BASE/seed$1" ckpts=() names=() name alpha projector norm extra=()
    while read -r name alpha projector norm; do ckpts+=("$runs/$name.pth"); names+=("$name"); done < <(models)
    case "$evaluator" in eval_nc.py) extra=(--splits train test) ;; eval_ood.py) extra=(--no-histograms) ;; esac
    launch "$evaluator" --config configs/embedded_eval.yaml \
        --dataset "fashion_mnist:classes=0-5,max_per_class=$TRAIN_PER_CLASS" --ckpt "${ckpts[@]}" --names "${names[@]}" \
        --out_dir "$BASE/seed$seed" --cache_dir "$CACHE" --seed "$seed" --image_size 32 \
        --max_per_class "$EVAL_PER_CLASS" --probe_epochs "$PROBE_EPOCHS" \
        --layers last_conv encoder projector_raw projector ${extra[@]+"${extra[@]}"}
}

start=$(date +%s)
for seed in $SEEDS; do   # every model of every seed, JOBS at a time: no core idles while one seed finishes
    while read -r name alpha projector norm; do
        pool_start "$BASE/logs/seed${seed}_$name.log" train "$seed" "$name" "$alpha" "$projector" "$norm"
    done < <(models)
done
pool_wait
for evaluator in eval_nc.py eval_ood.py train_lp.py; do   # then every evaluation, JOBS at a time
    for seed in $SEEDS; do pool_start "$BASE/logs/seed${seed}_${evaluator%.py}.log" evaluate "$seed" "$evaluator"; done
done
pool_wait
seed_dirs=()
for seed in $SEEDS; do launch summarize.py --results "$BASE/seed$seed"; seed_dirs+=("$BASE/seed$seed"); done
launch summarize.py --knob "${seed_dirs[@]}" --out_dir "$BASE"
echo "alpha sweep finished in $(( $(date +%s) - start )) s (seeds ${SEEDS// /, }; alphas ${ALPHAS// /, }); results in $BASE/"
