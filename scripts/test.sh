#!/usr/bin/env bash
# Run the test suite (set-up first); tests marked slow are left out unless asked for.
#   bash scripts/test.sh                           # the default suite
#   bash scripts/test.sh -m slow                   # the slow tests
#   bash scripts/test.sh tests/test_scripts.py -k dry_run
# Arguments: pytest's (options and test paths), passed on; -h, --help: this text (pytest --help: pytest's).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_common.sh
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
