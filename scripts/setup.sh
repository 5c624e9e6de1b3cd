#!/usr/bin/env bash
# Set up the environment: .venv with the pinned requirements, Animal-MNIST (no deps) and
# Debian's Fashion-MNIST files. A second run with nothing changed is a quick no-op.
#   bash scripts/setup.sh        # PYTHON=python3.11 to create .venv with another interpreter
# Arguments: none (-h, --help: this text).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_common.sh
no_arguments "$@"

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.setup-stamp"
FASHION_DIR=/usr/share/datasets/fashion-mnist
want="$(cat requirements.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing requirements.txt into $VENV (the first time takes a few minutes)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
    # Animal-MNIST ships its arrays as gzip-pickles; its own loader needs tensorflow, which we never import.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps animal-mnist==0.4
    "$VENV/bin/python" -c "import torch, torchvision, timm, sklearn, skimage, scipy, yaml, tqdm, matplotlib, simplejpeg, tensorboard, wandb" \
        || { echo "setup: the installed packages do not import; see the pip output above" >&2; exit 1; }
    echo "$want" > "$STAMP"
fi

if [ ! -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian's dataset-fashion-mnist"
        (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }) \
            || { echo "setup: could not install dataset-fashion-mnist with apt-get" >&2; exit 1; }
    else
        echo "setup: Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (files under $FASHION_DIR)," \
             "or pass --data to a folder holding torchvision's FashionMNIST/raw files"
    fi
fi
