#!/usr/bin/env bash
# Linear probes on every layer of an NC-controlled ResNet (its projector included), same protocol.
set -euo pipefail
export EXPT_NAME=${EXPT_NAME:-${ARCH:-resnet18}_in100_nc}
exec bash "$(dirname "$0")/train_lp_resnet.sh" "$@"
