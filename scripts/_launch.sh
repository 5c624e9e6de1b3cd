# Sourced by the experiment scripts: `launch ENTRY.py ARGS...` runs an entry point with the
# project's .venv (or the active python), under torchrun when NPROC > 1.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python; fi
launch() {
    local entry="$1"; shift
    if [ "${NPROC:-1}" -gt 1 ]; then
        (set -x; "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" "$ROOT/$entry" "$@")
    else
        (set -x; "$PY" "$ROOT/$entry" "$@")
    fi
}
