#!/usr/bin/env bash
# The paper's full ImageNet-100 protocol on GPUs: VGG17, ResNet18, ResNet34, ViT-T and ViT-S, each as a
# baseline and with NC control; pretraining, then NC per layer, OOD detection on eight OOD sets and linear
# probing on eight downstream sets with the official protocol (scripts/_protocol.sh, docs/FIDELITY.md), then
# Table 1 and Figure 1 of the ten models (summarize.py) in results/paper/.
#   bash scripts/reproduce_paper.sh --dry-run    # check every data folder's files, print every command, run nothing
#   NPROC=4 bash scripts/reproduce_paper.sh      # run it all (pretraining under torchrun on 4 GPUs)
#   bash scripts/reproduce_paper.sh --smoke      # every command at toy scale on tiny generated data (minutes, CPU)
#   ARCHS=resnet18 DEVICE=cuda bash scripts/reproduce_paper.sh --smoke
# Arguments: --dry-run, --smoke (both may be given).
# Variables: the data folders DATA_DIR (ImageNet-100: train/ and val/ class folders), NINCO_DIR, IMAGENET_R_DIR,
# CIFAR100_DIR, FLOWERS_DIR, CUB_DIR, AIRCRAFT_DIR, PETS_DIR, STL10_DIR (defaults under /data/datasets); ARCHS
# (default "vgg17 resnet18 resnet34 vit_tiny vit_small"); NPROC (pretraining processes, default 4); WORK_DIR
# (where checkpoints/, results/ and cache/ go, default the repository); DEVICE (auto, cpu, cuda; default
# auto); CKPT_WHICH (best, the official choice, or last); PRETRAIN_FLAGS and EVAL_FLAGS (extra flags of every
# pretraining and every evaluation, e.g. PRETRAIN_FLAGS="--epochs 50"); the scripts' own variables pass through.
# --smoke writes tiny copies of the nine datasets (scripts/smoke_data.py) into SMOKE_DIR (default: a new
# temporary folder, printed), which is also WORK_DIR, then runs the same commands with toy flags: 1 epoch at
# 32 px, width 0.125 CNNs, ViTs with 8-px patches, batch 16, 1 probe epoch, no loader workers; the NC-controlled
# resnet18 and vit_tiny pretrain under torchrun with 2 processes (gloo on the CPU; on CUDA as many GPUs as
# there are, up to 2), the others in one.
# Reruns continue where a run stopped: a pretraining whose last checkpoint (<save_dir>/<ckpt_file>) exists is
# resumed from it (pretrain.py --resume; it does nothing when that run has all its epochs), an evaluation whose
# result file was made from the current checkpoint (the SHA-256 the file records) is skipped. The file each
# step writes for the next (the best_ checkpoint, each result file) is checked by path: a missing one stops
# the chain with one line naming it (exit 2); so does a data folder lacking what belongs there.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
MODE=run SMOKE=0
if [ "$DRY_RUN" = 1 ]; then MODE=dry; fi
for arg in "$@"; do
    case "$arg" in
        --dry-run) MODE=dry ;;
        --smoke) SMOKE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) refuse "takes --dry-run and --smoke, got '$arg'" ;;
    esac
done
ARCHS=${ARCHS:-"vgg17 resnet18 resnet34 vit_tiny vit_small"}
for ARCH in $ARCHS; do
    case "$ARCH" in
        vgg17|resnet18|resnet34|vit_tiny|vit_small) ;;
        *) echo "error: ARCHS holds '$ARCH'; the architectures are vgg17 resnet18 resnet34 vit_tiny vit_small" >&2
           exit 2 ;;
    esac
done
DEVICE=${DEVICE:-auto}
CKPT_WHICH=${CKPT_WHICH:-best}
case "$CKPT_WHICH" in best|last) ;; *) echo "error: CKPT_WHICH must be best or last, got '$CKPT_WHICH'" >&2; exit 2 ;; esac
read -ra PRETRAIN_ARGS <<< "--device $DEVICE ${PRETRAIN_FLAGS:-}"
read -ra EVAL_ARGS <<< "--device $DEVICE ${EVAL_FLAGS:-}"
SMOKE_TORCHRUN=""            # with --smoke: the runs under torchrun, and their process count

smoke_setup() {  # the tiny datasets, the toy flags and the process counts of --smoke
    SMOKE_DIR=${SMOKE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/ncood-smoke.XXXXXX")}
    mkdir -p "$SMOKE_DIR"
    SMOKE_DIR=$(cd "$SMOKE_DIR" && pwd)
    echo "# smoke run in $SMOKE_DIR"
    eval "$("$PY" "$ROOT/scripts/smoke_data.py" "$SMOKE_DIR/data")"
    WORK_DIR=$SMOKE_DIR
    NPROC=1
    local gpus=0 pair=2
    if [ "$DEVICE" != cpu ]; then gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())"); fi
    if [ "$DEVICE" != cpu ] && [ "$gpus" -gt 0 ] && [ "$gpus" -lt 2 ]; then pair=$gpus; fi
    SMOKE_TORCHRUN="resnet18_nc:$pair vit_tiny_nc:$pair"
    PRETRAIN_ARGS=(--epochs 1 --image_size 32 --num_classes "$SMOKE_NUM_CLASSES" -b 16 --workers 0 "${PRETRAIN_ARGS[@]}")
    EVAL_ARGS=(--image_size 32 --workers 0 --batch_size 64 --probe_epochs 1 "${EVAL_ARGS[@]}")
}

if [ "$SMOKE" = 1 ]; then smoke_setup; fi
export NPROC=${NPROC:-4}
DATA_VARS="DATA_DIR NINCO_DIR IMAGENET_R_DIR CIFAR100_DIR FLOWERS_DIR CUB_DIR AIRCRAFT_DIR PETS_DIR STL10_DIR"
export DATA_DIR=${DATA_DIR:-/data/datasets/ImageNet-100}   # ID: train/ and val/ class folders
export NINCO_DIR=${NINCO_DIR:-/data/datasets/NINCO/NINCO_OOD_classes}
export IMAGENET_R_DIR=${IMAGENET_R_DIR:-/data/datasets/imagenet-r}
export CIFAR100_DIR=${CIFAR100_DIR:-/data/datasets/cifar100}
export FLOWERS_DIR=${FLOWERS_DIR:-/data/datasets/flowers102}
export CUB_DIR=${CUB_DIR:-/data/datasets/cub200}
export AIRCRAFT_DIR=${AIRCRAFT_DIR:-/data/datasets/fgvc-aircraft-2013b}
export PETS_DIR=${PETS_DIR:-/data/datasets/oxford-iiit-pet}
export STL10_DIR=${STL10_DIR:-/data/datasets/stl10}
if [ -n "${WORK_DIR:-}" ]; then mkdir -p "$WORK_DIR"; fi
cd "${WORK_DIR:-$ROOT}"

check_data() {  # every dataset split the evaluations read, opened by its reader (scripts/paper_chain.py)
    local folders=() var commands
    for var in $DATA_VARS; do folders+=("$var=${!var}"); done
    commands=$(for script in ood_det_resnet.sh train_lp_resnet.sh; do
                   DRY_RUN=1 ARCH=resnet18 EXPT_NAME=check CKPT=none bash "$ROOT/scripts/$script"; done)
    "$PY" "$ROOT/scripts/paper_chain.py" check-data "${folders[@]}" <<< "$commands" || {
        echo "set the data folders (DATA_DIR, ...) in the environment, or fill them, and run again" >&2; exit 2; }
}

run_script() {  # run_script SCRIPT [flags]: run it, or in a dry run print the command it would run
    if [ "$MODE" = dry ]; then DRY_RUN=1 bash "$ROOT/scripts/$1" "${@:2}"; else DRY_RUN=0 bash "$ROOT/scripts/$1" "${@:2}"; fi
}

expect() {  # expect FILE WHY...: stop the chain in one line when the file a step should have written is missing
    if [ "$MODE" != dry ] && [ ! -f "$1" ]; then echo "error: $1 is missing: ${*:2}" >&2; exit 2; fi
}

pretrain_step() {  # pretrain_step SCRIPT PROCESSES [flags]: a fresh run, or --resume of the run in SAVE_DIR
    local last="$SAVE_DIR/$EXPT_NAME.pth" resume=()
    if [ -f "$last" ]; then
        echo "# $EXPT_NAME: resuming $last (pretrain.py does nothing when it has all its epochs)"
        resume=(--resume "$last")
    fi
    SAVE_DIR=$SAVE_DIR EXPT_NAME=$EXPT_NAME ARCH=$ARCH NPROC=$2 run_script "$1" "${@:3}" ${resume[@]+"${resume[@]}"}
    expect "$SAVE_DIR/best_$EXPT_NAME.pth" "the pretraining of $EXPT_NAME (scripts/$1) writes it beside $last; a flag that" \
        "moves them (--save_dir, --ckpt_file) breaks the chain, and a deleted one comes back only by pretraining anew"
}

eval_step() {  # eval_step SCRIPT RESULT_NAME: run the evaluation unless its result is from the current checkpoint
    local result="$OUT_DIR/$2.json"
    expect "$CKPT" "the evaluation of $EXPT_NAME reads it; rerun its pretraining (or CKPT_WHICH=last for the last epoch)"
    if [ -f "$result" ] && "$PY" "$ROOT/scripts/paper_chain.py" current "$result" "$CKPT" "$EXPT_NAME"; then
        echo "# $result was made from $CKPT: skipped"
        return 0
    fi
    ARCH=$ARCH EXPT_NAME=$EXPT_NAME CKPT=$CKPT OUT_DIR=$OUT_DIR NPROC=1 NNODES=1 run_script "$1" "${EVAL_ARGS[@]}"
    expect "$result" "scripts/$1 wrote no $2 results for $EXPT_NAME"
}

model_steps() {  # model_steps FAMILY VARIANT: the four steps of one model
    local family=$1 variant=$2 suffix="" nproc=$NPROC flags=() entry
    if [ "$variant" = nc ]; then suffix=_nc; fi
    EXPT_NAME=${ARCH}_in100_${variant} SAVE_DIR=./checkpoints/$ARCH OUT_DIR=./results/${ARCH}_in100_${variant}
    if [ "$CKPT_WHICH" = best ]; then CKPT=$SAVE_DIR/best_$EXPT_NAME.pth; else CKPT=$SAVE_DIR/$EXPT_NAME.pth; fi
    for entry in $SMOKE_TORCHRUN; do
        if [ "${entry%%:*}" = "${ARCH}_$variant" ]; then nproc=${entry##*:}; fi
    done
    if [ "$SMOKE" = 1 ]; then
        if [ "$family" = vit ]; then flags=(--patch_size 8); else flags=(--width 0.125); fi
    fi
    echo "# $ARCH $variant"
    pretrain_step "pretrain_${family}${suffix}.sh" "$nproc" ${flags[@]+"${flags[@]}"} "${PRETRAIN_ARGS[@]}"
    eval_step "nc_eval_${family}${suffix}.sh" nc
    eval_step "ood_det_${family}${suffix}.sh" ood
    eval_step "train_lp_${family}${suffix}.sh" linear_probe
    RESULTS+=("$OUT_DIR")
}

start=$(date +%s)
check_data
RESULTS=()
for ARCH in $ARCHS; do
    case "$ARCH" in vgg17) family=vgg ;; resnet18|resnet34) family=resnet ;; *) family=vit ;; esac
    model_steps "$family" baseline
    model_steps "$family" nc
done
echo "# Table 1 and Figure 1"
NPROC=1 NNODES=1 DRY_RUN=$([ "$MODE" = dry ] && echo 1 || echo 0) launch summarize.py --results "${RESULTS[@]}" \
    --out_dir ./results/paper
expect ./results/paper/summary.json "summarize.py wrote no Table 1"
if [ "$MODE" != dry ]; then echo "paper chain finished in $(( $(date +%s) - start )) s; Table 1 in $PWD/results/paper/"; fi
