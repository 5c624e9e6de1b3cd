#!/usr/bin/env bash
# Linear probes on every layer of an NC-controlled VGG17 (its projector included), same protocol.
set -euo pipefail
export ARCH=vgg17 EXPT_NAME=${EXPT_NAME:-vgg17_in100_nc}
exec bash "$(dirname "$0")/train_lp_resnet.sh" "$@"
