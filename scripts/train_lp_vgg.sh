#!/usr/bin/env bash
# Linear probes on every layer of a VGG17 baseline, same protocol.
set -euo pipefail
export ARCH=vgg17 EXPT_NAME=${EXPT_NAME:-vgg17_in100_baseline}
exec bash "$(dirname "$0")/train_lp_resnet.sh" "$@"
