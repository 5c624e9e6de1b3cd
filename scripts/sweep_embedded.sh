#!/usr/bin/env bash
# The training-length sweep behind the embedded study's settings: scripts/reproduce_embedded.sh at
# each length of LENGTHS (a few seeds, the arms of the claims), then one table and figure per length:
# where the baseline reaches its terminal phase (clean training top-1 plateau, encoder NC1
# flattening), whether each claim shows (paired difference and 95% CI), and what each length costs.
#   bash scripts/sweep_embedded.sh                           # -> results/sweep/sweep.{json,csv,md}, sweep.png
#   LENGTHS="8 16" SEEDS="0" bash scripts/sweep_embedded.sh   # any variable of scripts/demo.sh can be set
set -euo pipefail
cd "$(dirname "$0")/.."
LENGTHS=${LENGTHS:-"8 15 30 45"}
export SEEDS=${SEEDS:-"0 1 2"}
export ARMS=${ARMS:-"baseline ours"}
BASE=${BASE:-results/sweep}
RUNS_SWEEP=${RUNS_SWEEP:-runs/sweep}
studies=()
for epochs in $LENGTHS; do
    EPOCHS=$epochs BASE=$BASE/epochs$epochs RUNS_BASE=$RUNS_SWEEP/epochs$epochs bash scripts/reproduce_embedded.sh
    studies+=("$BASE/epochs$epochs")
done
source scripts/_launch.sh
launch summarize.py --sweep "${studies[@]}" --out_dir "$BASE"
