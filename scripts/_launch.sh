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
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python; fi
launch() {
    local entry="$1"; shift
    local cmd=("$PY" "$ROOT/$entry" "$@")
    local nnodes="${NNODES:-1}" nproc="${NPROC:-1}"
    if [ "$nnodes" -gt 1 ]; then
        local where
        if [ -n "${RDZV_ENDPOINT:-}" ]; then
            where=(--rdzv_backend=c10d --rdzv_endpoint="$RDZV_ENDPOINT" --rdzv_id="${RDZV_ID:-ncood}")
        else
            : "${NODE_RANK:?NNODES > 1 needs NODE_RANK (0..NNODES-1) and MASTER_ADDR, or RDZV_ENDPOINT}"
            : "${MASTER_ADDR:?NNODES > 1 needs MASTER_ADDR (the host of node 0), or RDZV_ENDPOINT}"
            where=(--node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="${MASTER_PORT:-29500}")
        fi
        cmd=("$PY" -m torch.distributed.run --nnodes="$nnodes" --nproc_per_node="$nproc" "${where[@]}"
             "$ROOT/$entry" "$@")
    elif [ "$nproc" -gt 1 ]; then
        cmd=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$nproc" "$ROOT/$entry" "$@")
    fi
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf '%q ' "${cmd[@]}"; printf '\n'
    else
        (set -x; "${cmd[@]}")
    fi
}
