#!/usr/bin/env bash
# OOD detection of the DDU CIFAR-10 models of ddu_l2_pretrain.sh (Haas, Yolland & Rabus, TMLR 2022, Tables 4
# and 5): AUROC vs SVHN, CIFAR-100 and Tiny-ImageNet of DDU's GMM and of MSP (the model's own softmax) at the
# penultimate layer (baseline: encoder; L2 model: head_input, the normalized embedding its classifier reads),
# of the GMM on the logits (--layers classifier), and for the L2 model also of the GMM on the embedding before
# normalization (encoder). Then min / max / mean over seeds. The GMM is fitted on the whole CIFAR-10 training
# split (DDU fits it on the 90% it trained on). TINY_DIR holds Tiny-ImageNet class folders in test/ or val/
# (imagefolder layout: re-sort val/ by val_annotations.txt).
#   bash scripts/ddu_l2_eval.sh [eval_ood.py flags]      # flags after the name go to every eval_ood.py command
# Variables: CIFAR10_DIR, SVHN_DIR, CIFAR100_DIR, TINY_DIR, SEEDS, VARIANTS, CKPT_DIR, OUT_DIR, WORKERS, DRY_RUN.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
flags_for eval_ood.py "$@"
CIFAR10_DIR=${CIFAR10_DIR:-/data/datasets/cifar10}     # holds cifar-10-batches-py/
SVHN_DIR=${SVHN_DIR:-/data/datasets/svhn}               # test_32x32.mat
CIFAR100_DIR=${CIFAR100_DIR:-/data/datasets/cifar100}   # holds cifar-100-python/
TINY_DIR=${TINY_DIR:-/data/datasets/tiny-imagenet-200}
SEEDS=${SEEDS:-"0 1 2 3 4 5 6 7 8 9 10 11 12 13 14"}
VARIANTS=${VARIANTS:-"baseline l2"}
CKPT_DIR=${CKPT_DIR:-./checkpoints/ddu_cifar10}
OUT_DIR=${OUT_DIR:-./results/ddu_cifar10}
WORKERS=${WORKERS:-8}
# transform=small: 32-px images as they are (Tiny-ImageNet resized to 32), as DDU evaluates
OOD=("svhn:root=$SVHN_DIR,transform=small" "cifar100:root=$CIFAR100_DIR,transform=small" "tiny_imagenet=imagefolder:root=$TINY_DIR,transform=small")

results=()
for SEED in $SEEDS; do
    for VARIANT in $VARIANTS; do
        case "$VARIANT" in
            baseline) PENULTIMATE=encoder ;;
            l2) PENULTIMATE=head_input ;;
            *) echo "unknown variant $VARIANT (baseline or l2)" >&2; exit 2 ;;
        esac
        out="$OUT_DIR/seed$SEED"
        common=(--ckpt "$CKPT_DIR/${VARIANT}_seed${SEED}.pth" --names "$VARIANT" --dataset cifar10:transform=small --data "$CIFAR10_DIR"
                --image_size 32 --ood "${OOD[@]}" --logits model --out_dir "$out" --workers "$WORKERS")
        launch eval_ood.py "${common[@]}" --layers "$PENULTIMATE" --scorers gmm msp --out_name "${VARIANT}_penultimate" "$@"
        launch eval_ood.py "${common[@]}" --layers classifier --scorers gmm --out_name "${VARIANT}_logits" "$@"
        results+=("$out/${VARIANT}_penultimate.json" "$out/${VARIANT}_logits.json")
        if [ "$VARIANT" = l2 ]; then
            launch eval_ood.py "${common[@]}" --layers encoder --scorers gmm --out_name l2_unnormalized "$@"
            results+=("$out/l2_unnormalized.json")
        fi
    done
done
launch summarize.py --ood_seeds "${results[@]}" --out_dir "$OUT_DIR"
