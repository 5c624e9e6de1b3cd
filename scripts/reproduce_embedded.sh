#!/usr/bin/env bash
# The paper's four claims on the embedded protocol over several seeds: the demo once per seed,
# then the claims table (mean +- std over the seeds, and in how many seeds each claim holds).
#   bash scripts/reproduce_embedded.sh                 # seeds 0 1 2 -> results/embedded/
#   SEEDS="0 1 2 3 4" EPOCHS=16 bash scripts/reproduce_embedded.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
BASE=${BASE:-results/embedded}
dirs=()
for seed in $SEEDS; do
    SEED=$seed RUNS=runs/embedded/seed$seed OUT=$BASE/seed$seed bash scripts/demo.sh
    dirs+=("$BASE/seed$seed")
done
source scripts/_launch.sh
launch summarize.py --seeds "${dirs[@]}" --out_dir "$BASE"
