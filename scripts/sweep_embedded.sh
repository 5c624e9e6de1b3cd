#!/usr/bin/env bash
# The training-length sweep behind the embedded study's settings: scripts/reproduce_embedded.sh at
# each length of LENGTHS (a few seeds, the arms of the claims), then one table and figure per length:
# where the baseline reaches its terminal phase (clean training top-1 plateau, encoder NC1
# flattening), whether each claim shows (paired difference and 95% CI), and what each length costs.
#   bash scripts/sweep_embedded.sh                           # -> results/sweep/sweep.{json,csv,md}, sweep.png
#   JOBS=2 bash scripts/sweep_embedded.sh                    # as docs/REPRODUCTION.md ran it (about 45 minutes)
#   LENGTHS="8 16" SEEDS="0" bash scripts/sweep_embedded.sh   # any variable of scripts/demo.sh can be set
#   JOBS=3 bash scripts/sweep_embedded.sh                     # the seeds of a length at once, one thread each
# The table covers every length under BASE (epochs<L>/), so a later run with other LENGTHS extends it.
# Arguments: none (-h, --help: this text). Variables: LENGTHS, SEEDS, ARMS, BASE, RUNS_SWEEP, JOBS, DRY_RUN.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_common.sh
no_arguments "$@"
bool_var DRY_RUN; export DRY_RUN
int_var JOBS 1
LENGTHS=${LENGTHS:-"10 20 30"}
export SEEDS=${SEEDS:-"0 1 2"}
export ARMS=${ARMS:-"baseline ours"}
BASE=${BASE:-results/sweep}
RUNS_SWEEP=${RUNS_SWEEP:-runs/sweep}
for epochs in $LENGTHS; do
    EPOCHS=$epochs BASE=$BASE/epochs$epochs RUNS_BASE=$RUNS_SWEEP/epochs$epochs bash scripts/reproduce_embedded.sh
done
studies=()
for folder in "$BASE"/epochs*; do [ -f "$folder/claims.json" ] && studies+=("$folder"); done
if [ "$DRY_RUN" = 1 ]; then studies=(); for epochs in $LENGTHS; do studies+=("$BASE/epochs$epochs"); done; fi
source scripts/_launch.sh
launch summarize.py --sweep "${studies[@]}" --out_dir "$BASE"
