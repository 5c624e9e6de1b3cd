#!/usr/bin/env bash
# Check a CUDA machine in one command (under 8 minutes): bench/bench_gpu.py (our bf16 step vs a bare one,
# loader img/s per worker count, DALI when installed), the paper's smoke chain on CUDA, CPU-vs-CUDA
# float32 agreement of one checkpoint's features and NC metrics, and 2-process DDP when 2+ GPUs are
# present. One report: results/gpu_check/report.{json,md} (OUT_DIR=... elsewhere), each part's log beside it.
# Exit 0: every check passed or was skipped; 1: a check failed; 2: no CUDA device here.
#   bash scripts/gpu_check.sh
#   bash scripts/gpu_check.sh --parts bench agreement      # some parts only (bench/gpu_check.py --help)
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/_common.sh
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
"$PY" -c "import sys
try:
    import torch
except ImportError:
    sys.exit(4)
sys.exit(0 if torch.cuda.is_available() else 3)" >/dev/null 2>&1
case $? in
    0) ;;
    3) echo "error: no CUDA device here (torch.cuda.is_available() is False with $PY); run scripts/gpu_check.sh on a" \
            "machine with an NVIDIA GPU" >&2; exit 2 ;;
    *) echo "error: torch does not import with $PY; run bash scripts/setup.sh (or set PYTHON to an environment with" \
            "torch)" >&2; exit 2 ;;
esac
exec "$PY" bench/gpu_check.py --device cuda --out "${OUT_DIR:-results/gpu_check}" "$@"
