"""Convert a checkpoint of another codebase - the official NC-OOD code (VGG-17, ResNet-18/34,
ViT-T/S, baseline or NC-controlled), a torchvision ResNet or a timm ViT - into an nc-ood
checkpoint, to start ``pretrain.py --init_from`` from it or to keep it beside ours.

    python convert.py --ckpt official/best_resnet18_nc.pth --out checkpoints/resnet18_nc.pth

The architecture and the projector are inferred from the tensors' shapes; ``--arch``,
``--output_dim``, ``--hidden_mlp``, ``--projector`` and ``--global_pool`` override, and
``--image_size`` sets the image size of a ViT whose file does not record it (the official ViTs;
default 224). The evaluators read such files directly; converting is only needed to train on.
"""
from core.checkpoint import convert_checkpoint
from core.config import parse_config
from core.errors import UserError, cli_main
from models.foreign import FOREIGN_HELP, FOREIGN_OPTIONS, FOREIGN_TYPES
from train.options import model_flags

CONVERT_DEFAULTS = {"ckpt": None, "out": None, "image_size": None, **FOREIGN_OPTIONS}
CONVERT_TYPES = {"ckpt": str, "out": str, "image_size": int, **FOREIGN_TYPES}
CONVERT_HELP = {**FOREIGN_HELP,
                "ckpt": "the checkpoint to convert (official NC-OOD, torchvision or timm)",
                "out": "the nc-ood checkpoint to write (never overwritten)",
                "image_size": "image size of a ViT whose file does not record it (default 224); must agree with a "
                              "stored position embedding"}


@cli_main
def main(argv=None) -> dict:
    cfg = parse_config(CONVERT_DEFAULTS, argv, description=__doc__, types=CONVERT_TYPES, helps=CONVERT_HELP)
    if not cfg.ckpt or not cfg.out:
        raise UserError("pass --ckpt FILE (the checkpoint to convert) and --out FILE (the nc-ood checkpoint to write)")
    record = convert_checkpoint(cfg.ckpt, cfg.out, img_size=cfg.image_size,
                                **{key: getattr(cfg, key) for key in FOREIGN_OPTIONS})
    print(f"wrote {cfg.out}: {record['summary']}")
    print(f"start a run from it with: pretrain.py --init_from {cfg.out} {' '.join(model_flags(record['model_kwargs']))}")
    return record


if __name__ == "__main__":
    main()
