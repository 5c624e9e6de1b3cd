#!/usr/bin/env bash
# OOD detection on the paper's eight OOD sets with ImageNet-100 as ID, with the official protocol
# (scripts/_protocol.sh): the energy score of a linear probe trained on ID training features, at the
# encoder hook point (CNNs: last_conv) and at the L2-normalized projector output; the best checkpoint,
# float32 features, and the official OOD splits: NINCO's stratified 20% hold-out, ImageNet-R's test/
# folder, Flowers-102's val split, CUB-200's test/ (else val/) folder, the test splits of the others,
# CIFAR-100 with its own statistics for the CNNs. The VGG and ViT scripts reuse this one.
#   bash scripts/ood_det_resnet.sh [eval_ood.py flags]     # flags after the name override the protocol's
# Variables: ARCH, EXPT_NAME, CKPT, OUT_DIR (as scripts/nc_eval_resnet.sh), the data folders (DATA_DIR, NINCO_DIR,
# IMAGENET_R_DIR, CIFAR100_DIR, FLOWERS_DIR, CUB_DIR, AIRCRAFT_DIR, PETS_DIR, STL10_DIR), INPUT_SIZE,
# SCORERS, LAYERS, WORKERS, and the protocol's (scripts/_protocol.sh); DRY_RUN=1 prints the command.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
flags_for eval_ood.py "$@"
ARCH=${ARCH:-resnet18}
EXPT_NAME=${EXPT_NAME:-${ARCH}_in100_baseline}
source "$(dirname "$0")/_protocol.sh"
DATA_DIR=${DATA_DIR:-/data/datasets/ImageNet-100}      # ID: train/ and val/ class folders
NINCO_DIR=${NINCO_DIR:-/data/datasets/NINCO/NINCO_OOD_classes}   # 64 class folders (20% per class scored)
IMAGENET_R_DIR=${IMAGENET_R_DIR:-/data/datasets/imagenet-r}      # train/ and test/ class folders (test/ scored)
CIFAR100_DIR=${CIFAR100_DIR:-/data/datasets/cifar100}   # holds cifar-100-python/
FLOWERS_DIR=${FLOWERS_DIR:-/data/datasets/flowers102}   # jpg/, imagelabels.mat, setid.mat (val scored)
CUB_DIR=${CUB_DIR:-/data/datasets/cub200}                # train/ and test/ (or val/) class folders
AIRCRAFT_DIR=${AIRCRAFT_DIR:-/data/datasets/fgvc-aircraft-2013b}
PETS_DIR=${PETS_DIR:-/data/datasets/oxford-iiit-pet}
STL10_DIR=${STL10_DIR:-/data/datasets/stl10}            # holds stl10_binary/
INPUT_SIZE=${INPUT_SIZE:-224}
SCORERS=${SCORERS:-energy}                              # e.g. "energy msp maxlogit gmm knn vim neco mahalanobis"
LAYERS=${LAYERS:-"$ENC_LAYER projector"}
OUT_DIR=${OUT_DIR:-./results/${EXPT_NAME}}

launch eval_ood.py --ckpt "$CKPT" --names "$EXPT_NAME" --dataset imagenet100 --data "$DATA_DIR" \
    --ood "ninco=imagefolder:root=$NINCO_DIR,holdout=0.2" "imagenet_r=imagefolder:root=$IMAGENET_R_DIR" \
          "cifar100:root=$CIFAR100_DIR$CIFAR_STATS" "flowers102:root=$FLOWERS_DIR" "cub200=imagefolder:root=$CUB_DIR" \
          "aircraft:root=$AIRCRAFT_DIR" "pets:root=$PETS_DIR" "stl10:root=$STL10_DIR" \
    --ood_splits flowers102=val --precision "$PRECISION" \
    --image_size "$INPUT_SIZE" --layers $LAYERS --scorers $SCORERS --probe_recipe "$PROBE_RECIPE" --out_dir "$OUT_DIR" --workers "${WORKERS:-8}" "$@"
