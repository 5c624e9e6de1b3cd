# Sourced by the experiment scripts: `launch ENTRY.py ARGS...` runs an entry point with the
# project's .venv (or the active python), under torchrun when NPROC > 1 or NNODES > 1. With
# DRY_RUN=1 it only prints the command.
#
# One node:   NPROC=4 bash scripts/pretrain_resnet_nc.sh                  (torchrun --standalone)
# Many nodes: the same command on every node, with
#   NNODES=2 NODE_RANK=<0 on the first node, 1 on the second> MASTER_ADDR=<first node's host> MASTER_PORT=29500
# (static ranks: node r runs global ranks r*NPROC .. r*NPROC+NPROC-1), or with RDZV_ENDPOINT=<host:port>
# instead of NODE_RANK/MASTER_ADDR/MASTER_PORT for torchrun's c10d rendezvous (ranks assigned as nodes
# join; RDZV_ID names the job). scripts/slurm/pretrain.sbatch sets these from SLURM's variables.
# DRY_RUN takes 1/0, true/false, yes/no, on/off; NPROC, NNODES (>= 1), NODE_RANK (< NNODES), MASTER_PORT and
# WORKERS must be whole numbers: any other value is refused in one line (exit 2) before anything runs.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
bool_var DRY_RUN
int_var NPROC 1; int_var NNODES 1; int_var NODE_RANK 0; int_var MASTER_PORT 1; int_var WORKERS 0
launch() {
    local entry="$1"; shift
    local cmd=("$PY" "$ROOT/$entry" "$@")
    local nnodes="${NNODES:-1}" nproc="${NPROC:-1}"
    if [ "$nnodes" -gt 1 ]; then
        local where
        if [ -n "${RDZV_ENDPOINT:-}" ]; then
            where=(--rdzv_backend=c10d --rdzv_endpoint="$RDZV_ENDPOINT" --rdzv_id="${RDZV_ID:-ncood}")
        else
            if [ -z "${NODE_RANK:-}" ] || [ -z "${MASTER_ADDR:-}" ]; then
                echo "error: NNODES=$nnodes needs NODE_RANK (0..$((nnodes - 1))) and MASTER_ADDR (the host of node 0)," \
                     "or RDZV_ENDPOINT" >&2
                exit 2
            fi
            if [ "$NODE_RANK" -ge "$nnodes" ]; then
                echo "error: NODE_RANK must be 0..$((nnodes - 1)) with NNODES=$nnodes, got '$NODE_RANK'" >&2; exit 2
            fi
            where=(--node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="${MASTER_PORT:-29500}")
        fi
        cmd=("$PY" -m torch.distributed.run --nnodes="$nnodes" --nproc_per_node="$nproc" "${where[@]}"
             "$ROOT/$entry" "$@")
    elif [ "$nproc" -gt 1 ]; then
        cmd=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$nproc" "$ROOT/$entry" "$@")
    fi
    if [ "$DRY_RUN" = 1 ]; then
        printf '%q ' "${cmd[@]}"; printf '\n'
    else
        (set -x; "${cmd[@]}")
    fi
}

# `pretrain_paper ARCH VARIANT [pretrain.py flags]` pretrains one of the paper's ten models from its
# recipe file, configs/paper/<ARCH>_<VARIANT>.yaml (VARIANT: baseline or nc), which holds every value of
# the recipe (`pretrain.py --config FILE --print_config` prints them). The environment sets the paths,
# the process counts (NPROC, NNODES, ... above) and the few switches a user flips; flags after the
# script's name override anything (`bash scripts/pretrain_vit_nc.sh --epochs 50 --lr 1e-3`).
#   DATA_DIR (ImageNet-100 with train/ and val/), SAVE_DIR, EXPT_NAME (<EXPT_NAME>.pth), WORKERS,
#   BS (the global batch), NUM_EPOCHS, ALPHA, NORM (bn | gn_ws), PROJECTOR (etf | random),
#   ENTROPY_BATCH (global | local)
# The recipe's other numbers are the file's: a variable of the scripts' earlier versions that set one
# (LR, WD, ...) is refused, naming the file and the flag, rather than silently ignored.
RETIRED_VARS="LR:lr LR_BASE:lr WD:wd NUM_CLASS:num_classes INPUT_SIZE:image_size PATCH:patch_size
    DROP_PATH:drop_path WARMUP_EPOCHS:warmup_epochs WARMUP_LR:warmup_lr MIN_LR:min_lr REPEATS:repeated_aug
    OUTPUT_DIM:output_dim HIDDEN_MLP:hidden_mlp"
SWITCH_VARS="WORKERS:workers BS:batch_size NUM_EPOCHS:epochs ALPHA:alpha NORM:norm PROJECTOR:projector
    ENTROPY_BATCH:entropy_batch SAVE_DIR:save_dir"
pretrain_paper() {
    local arch="$1" variant="$2"; shift 2
    local recipe="configs/paper/${arch}_${variant}.yaml" pair var flag
    if [ ! -f "$ROOT/$recipe" ]; then
        echo "error: no recipe $recipe; ARCH is one of vgg17 resnet18 resnet34 vit_tiny vit_small" >&2; exit 2
    fi
    for pair in $RETIRED_VARS; do
        var=${pair%%:*} flag=${pair##*:}
        if [ -n "${!var:-}" ]; then
            echo "error: $var is not read any more: the recipe is $recipe; pass --$flag ${!var} or edit the file" >&2
            exit 2
        fi
    done
    local args=(--config "$ROOT/$recipe" --data "${DATA_DIR:-/data/datasets/ImageNet-100}")
    for pair in $SWITCH_VARS; do
        var=${pair%%:*} flag=${pair##*:}
        if [ -n "${!var:-}" ]; then args+=("--$flag" "${!var}"); fi
    done
    if [ -n "${EXPT_NAME:-}" ]; then args+=(--ckpt_file "${EXPT_NAME}.pth" --expt_name "$EXPT_NAME"); fi
    launch pretrain.py "${args[@]}" "$@"
}
