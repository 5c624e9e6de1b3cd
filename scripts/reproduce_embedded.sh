#!/usr/bin/env bash
# The embedded study: the paper's four claims and its two ingredients over seeds. For each seed,
# scripts/demo.sh with the four arms of the 2 x 2 (baseline; entropy term only; fixed ETF projector
# only; both = ours; same data, model and normalization), evaluated at the paper's hook point
# (last_conv), the pooled embedding (encoder) and the projector; then the claims over seeds (mean +- std,
# paired difference with its 95% CI, seeds holding), the 2 x 2 (which ingredient moves encoder NC1,
# transfer and FPR95), and the collapse over training as mean +- std bands.
#   bash scripts/reproduce_embedded.sh                           # seeds 0-4 -> results/embedded/
#   SEEDS="0 1 2" EPOCHS=16 bash scripts/reproduce_embedded.sh   # any variable of scripts/demo.sh can be set
#   JOBS=2 bash scripts/reproduce_embedded.sh                    # two seeds at a time, one thread each
# Writes results/embedded/claims.{json,csv,md}, ablation.{json,csv,md}, nc1_over_training.png and one
# results folder per seed (results/embedded/seed<N>/); checkpoints in runs/embedded/seed<N>/. With
# JOBS > 1 each seed's output goes to results/embedded/seed<N>.log, and every process gets
# (cores / JOBS) threads, which changes the numbers: float sums run in another order, and over 20 epochs
# the runs drift apart by about the spread between seeds.
# Arguments: none (-h, --help: this text). Variables: SEEDS, BASE, RUNS_BASE, JOBS (>= 1), ARMS, LAYERS, DRY_RUN.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_common.sh
no_arguments "$@"
bool_var DRY_RUN; export DRY_RUN
int_var JOBS 1
SEEDS=${SEEDS:-"0 1 2 3 4"}
BASE=${BASE:-results/embedded}
RUNS_BASE=${RUNS_BASE:-runs/embedded}
JOBS=${JOBS:-1}
export ARMS=${ARMS:-"baseline entropy projector ours"}
export LAYERS=${LAYERS:-"last_conv encoder projector_raw projector"}   # what the claims read
bash scripts/setup.sh
one_seed() { SEED=$1 RUNS=$RUNS_BASE/seed$1 OUT=$BASE/seed$1 bash scripts/demo.sh; }
start=$(date +%s)
for_seeds one_seed
source scripts/_launch.sh
launch summarize.py --seeds "${SEED_DIRS[@]}" --out_dir "$BASE"
echo "study finished in $(( $(date +%s) - start )) s (seeds ${SEEDS// /, }; arms ${ARMS// /, }); results in $BASE/"
