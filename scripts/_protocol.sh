# Sourced by the paper's evaluation scripts (nc_eval_*, ood_det_*, train_lp_*): the official NC-OOD
# evaluation protocol, each choice a variable (docs/FIDELITY.md says where each comes from). The
# architecture's defaults come from models/defaults.py, the one table of per-architecture settings.
#   CKPT_WHICH  best (default: the official scripts evaluate best_<ckpt>.pth, the best ID val top-1) | last
#   PRECISION   float32 (default: the official evaluation's arithmetic) | bfloat16 (autocast)
#   ENC_LAYER   the encoder hook point (hook_layer): CNNs last_conv (the pooled last convolution before its norm,
#               the residual add and the ReLU, as the official CNN code hooks it); ViTs encoder (the official
#               ViT code's pooled, normed patch tokens); set ENC_LAYER=encoder for our post-block embedding
#   PROJ_RAW    the projector as the official NC and transfer evaluations read it (projector_layer): CNNs
#               projector_raw (before the L2 normalization); ViTs projector (after it, as its ViT code returns it)
#   CIFAR_STATS ",stats=own" for CNNs (CIFAR-100 normalized with its own statistics, as the official
#               CNN evaluation); empty for ViTs (ImageNet statistics, as its ViT code)
#   PROBE_RECIPE the official linear probe (evaluate/probe.py): CNNs cnn (AdamW lr 1e-3, batch 256); ViTs vit
#               (AdamW lr 1e-2, weight decay 1e-4, batch 2048, 3 repeats per sample, as its ViT code)
# Requires ARCH and EXPT_NAME; sets CKPT unless given.
CKPT_WHICH=${CKPT_WHICH:-best}
case "$CKPT_WHICH" in
    best) CKPT=${CKPT:-./checkpoints/${ARCH}/best_${EXPT_NAME}.pth} ;;
    last) CKPT=${CKPT:-./checkpoints/${ARCH}/${EXPT_NAME}.pth} ;;
    *) echo "error: CKPT_WHICH must be best or last, got '$CKPT_WHICH'" >&2; exit 2 ;;
esac
PRECISION=${PRECISION:-float32}
defaults=$("$PY" "$ROOT/models/defaults.py" "$ARCH") || exit 2
eval "$defaults"
ENC_LAYER=${ENC_LAYER:-$DEFAULT_HOOK_LAYER}
PROJ_RAW=${PROJ_RAW:-$DEFAULT_PROJECTOR_LAYER}
PROBE_RECIPE=${PROBE_RECIPE:-$DEFAULT_PROBE_RECIPE}
if [ "$DEFAULT_CIFAR_STATS" = own ]; then CIFAR_STATS=${CIFAR_STATS-,stats=own}; else CIFAR_STATS=${CIFAR_STATS-}; fi
