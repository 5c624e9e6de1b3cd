#!/usr/bin/env bash
# The paper's full ImageNet-100 protocol on GPUs: VGG17, ResNet18, ResNet34, ViT-T and ViT-S, each as
# a baseline and with NC control; pretraining, then NC per layer, OOD detection on eight OOD sets and
# linear probing on eight downstream sets, evaluated with the official protocol (scripts/_protocol.sh,
# docs/FIDELITY.md). Set the data paths below (or in the environment).
#   bash scripts/reproduce_paper.sh --dry-run    # check every path, print every command, run nothing
#   NPROC=4 bash scripts/reproduce_paper.sh      # run it all (pretraining under torchrun on 4 GPUs)
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
case "${1:-}" in
    --dry-run) DRY_RUN=1 ;;
    "") ;;
    *) echo "usage: bash scripts/reproduce_paper.sh [--dry-run]" >&2; exit 2 ;;
esac

export DATA_DIR=${DATA_DIR:-/data/datasets/ImageNet-100}   # ID: train/ and val/ class folders
export NINCO_DIR=${NINCO_DIR:-/data/datasets/NINCO/NINCO_OOD_classes}
export IMAGENET_R_DIR=${IMAGENET_R_DIR:-/data/datasets/imagenet-r}
export CIFAR100_DIR=${CIFAR100_DIR:-/data/datasets/cifar100}
export FLOWERS_DIR=${FLOWERS_DIR:-/data/datasets/flowers102}
export CUB_DIR=${CUB_DIR:-/data/datasets/cub200}
export AIRCRAFT_DIR=${AIRCRAFT_DIR:-/data/datasets/fgvc-aircraft-2013b}
export PETS_DIR=${PETS_DIR:-/data/datasets/oxford-iiit-pet}
export STL10_DIR=${STL10_DIR:-/data/datasets/stl10}
export NPROC=${NPROC:-4}
ARCHS=${ARCHS:-"vgg17 resnet18 resnet34 vit_tiny vit_small"}

missing=0
for var in DATA_DIR NINCO_DIR IMAGENET_R_DIR CIFAR100_DIR FLOWERS_DIR CUB_DIR AIRCRAFT_DIR PETS_DIR STL10_DIR; do
    if [ ! -d "${!var}" ]; then echo "missing: $var=${!var} is not a folder" >&2; missing=1; fi
done
for sub in train val; do
    if [ ! -d "$DATA_DIR/$sub" ]; then echo "missing: DATA_DIR=$DATA_DIR has no $sub/ class folders" >&2; missing=1; fi
done
for sub in train test; do  # the official ImageNet-R split: probes train on train/, OOD detection scores test/
    if [ ! -d "$IMAGENET_R_DIR/$sub" ]; then
        echo "missing: IMAGENET_R_DIR=$IMAGENET_R_DIR has no $sub/ class folders (split ImageNet-R 80/20 into train/ and test/)" >&2
        missing=1
    fi
done
if [ ! -d "$CUB_DIR/train" ] || { [ ! -d "$CUB_DIR/test" ] && [ ! -d "$CUB_DIR/val" ]; }; then
    echo "missing: CUB_DIR=$CUB_DIR needs train/ and test/ (or val/) class folders" >&2; missing=1
fi
if [ "$missing" = 1 ]; then echo "set the paths above (or in the environment) and run again" >&2; exit 1; fi

export DRY_RUN
for ARCH in $ARCHS; do
    case "$ARCH" in
        vgg17) family=vgg ;;
        resnet18|resnet34) family=resnet ;;
        vit_tiny|vit_small) family=vit ;;
        *) echo "unknown architecture $ARCH" >&2; exit 2 ;;
    esac
    for variant in "" _nc; do
        echo "# $ARCH${variant:-" baseline"}"
        ARCH=$ARCH bash scripts/pretrain_${family}${variant}.sh
        # evaluation runs as one process per command
        ARCH=$ARCH NPROC=1 bash scripts/nc_eval_${family}${variant}.sh
        ARCH=$ARCH NPROC=1 bash scripts/ood_det_${family}${variant}.sh
        ARCH=$ARCH NPROC=1 bash scripts/train_lp_${family}${variant}.sh
    done
done
