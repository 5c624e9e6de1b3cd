# Sourced by the experiment scripts: `launch ENTRY.py ARGS...` runs an entry point with the
# project's .venv (or the active python), under torchrun when NPROC > 1. With DRY_RUN=1 it only
# prints the command.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python; fi
launch() {
    local entry="$1"; shift
    local cmd=("$PY" "$ROOT/$entry" "$@")
    if [ "${NPROC:-1}" -gt 1 ]; then
        cmd=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" "$ROOT/$entry" "$@")
    fi
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf '%q ' "${cmd[@]}"; printf '\n'
    else
        (set -x; "${cmd[@]}")
    fi
}
