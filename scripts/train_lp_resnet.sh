#!/usr/bin/env bash
# OOD generalization: a linear probe on the official hook points of a pretrained network for each of
# the paper's eight downstream datasets at 224 px (official probe, PROBE_RECIPE: CNNs AdamW lr 1e-3,
# 30 epochs, batch 256; ViTs their own recipe; the best test top-1 over the epochs is reported), with the official protocol (scripts/_protocol.sh):
# the best checkpoint, float32 features, CNNs at last_conv and the projector before its L2
# normalization. Features are cached, so a rerun only probes.
# The _nc, VGG and ViT scripts reuse this script.
#   bash scripts/train_lp_resnet.sh [train_lp.py flags]    # flags after the name override the protocol's
#   bash scripts/train_lp_resnet.sh --ckpt A.pth B.pth --names base nc   # several checkpoints in one table
# Variables: ARCH, EXPT_NAME, CKPT, OUT_DIR (as scripts/nc_eval_resnet.sh), CACHE_DIR, the data folders (DATA_DIR, NINCO_DIR,
# IMAGENET_R_DIR, CIFAR100_DIR, FLOWERS_DIR, CUB_DIR, AIRCRAFT_DIR, PETS_DIR, STL10_DIR),
# INPUT_SIZE, PROBE_EPOCHS, PROBE_LR, PROBE_BS, SOLVER, BS, WORKERS, LAYERS, and the protocol's
# (scripts/_protocol.sh); DRY_RUN=1 prints the command.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
flags_for train_lp.py "$@"
ARCH=${ARCH:-resnet18}                    # resnet18 | resnet34 | vgg17 | vit_tiny | vit_small
EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
source "$(dirname "$0")/_protocol.sh"     # CKPT (best_${EXPT_NAME}.pth; CKPT_WHICH=last), PRECISION, hook points
LAYERS=${LAYERS:-"$ENC_LAYER $PROJ_RAW"}  # e.g. "layer1 layer2 layer3 last_conv encoder projector_raw projector"
OUT_DIR=${OUT_DIR:-./results/${EXPT_NAME}}             # linear_probe.json/.csv/.md/.png/.config.yaml
CACHE_DIR=${CACHE_DIR:-./cache/features}               # shared with eval_nc.py and eval_ood.py
DATA_DIR=${DATA_DIR:-/data/datasets/ImageNet-100}      # ID (for VCI/NC1 and the log-odds gain): train/ and val/

# Downstream datasets (never downloaded; data/natural.py describes each folder's layout).
NINCO_DIR=${NINCO_DIR:-/data/datasets/NINCO/NINCO_OOD_classes}  # 64 class folders, split 80/20 per class (seed 0)
IMAGENET_R_DIR=${IMAGENET_R_DIR:-/data/datasets/imagenet-r}      # train/ and test/ class folders (the official split)
CIFAR100_DIR=${CIFAR100_DIR:-/data/datasets/cifar100}            # holds cifar-100-python/
FLOWERS_DIR=${FLOWERS_DIR:-/data/datasets/flowers102}            # jpg/, imagelabels.mat, setid.mat
CUB_DIR=${CUB_DIR:-/data/datasets/cub200}                        # train/ and test/ (or val/) class folders
AIRCRAFT_DIR=${AIRCRAFT_DIR:-/data/datasets/fgvc-aircraft-2013b}
PETS_DIR=${PETS_DIR:-/data/datasets/oxford-iiit-pet}             # images/ and annotations/
STL10_DIR=${STL10_DIR:-/data/datasets/stl10}                     # holds stl10_binary/

INPUT_SIZE=${INPUT_SIZE:-224}
PROBE_EPOCHS=${PROBE_EPOCHS:-30}; PROBE_LR=${PROBE_LR:-}; PROBE_BS=${PROBE_BS:-}   # empty: PROBE_RECIPE's
SOLVER=${SOLVER:-adamw}                   # adamw (the official probe) | lbfgs (Kornblith et al. 2019)
BS=${BS:-256}; WORKERS=${WORKERS:-8}      # feature extraction
NPROC=1                                   # one process: extraction and probes do not use torchrun

# Splits: train -> probe, test -> accuracy; Aircraft and Pets train on trainval. Flowers-102 probes
# train on its train split and are tested on its val split, as the official code does; CIFAR-100 is
# normalized with its own statistics for the CNNs (CIFAR_STATS), as the official CNN code does.
launch train_lp.py --ckpt "$CKPT" --names "$EXPT_NAME" --image_size "$INPUT_SIZE" \
    --dataset imagenet100 --data "$DATA_DIR" \
    --transfer "ninco=imagefolder:root=$NINCO_DIR,holdout=0.2" \
               "imagenet_r=imagefolder:root=$IMAGENET_R_DIR" \
               "cifar100=cifar100:root=$CIFAR100_DIR$CIFAR_STATS" \
               "flowers102=flowers102:root=$FLOWERS_DIR" \
               "cub200=imagefolder:root=$CUB_DIR" \
               "aircraft=aircraft:root=$AIRCRAFT_DIR" \
               "pets=pets:root=$PETS_DIR" \
               "stl10=stl10:root=$STL10_DIR" \
    --test_splits flowers102=val --layers $LAYERS --precision "$PRECISION" \
    --probe_solver "$SOLVER" --probe_recipe "$PROBE_RECIPE" --probe_epochs "$PROBE_EPOCHS" \
    --probe_lr "$PROBE_LR" --probe_batch_size "$PROBE_BS" \
    --batch_size "$BS" --workers "$WORKERS" --cache_dir "$CACHE_DIR" --out_dir "$OUT_DIR" "$@"
