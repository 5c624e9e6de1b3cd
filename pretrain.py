"""Pretrain a backbone with or without neural-collapse control.

    python pretrain.py --config configs/embedded_cpu.yaml --alpha 0.05 --output_dim 128 --hidden_mlp 512
    torchrun --nproc_per_node=4 pretrain.py --data /data/ImageNet-100 --arch resnet18 ...

Every key of ``engine.trainer.PRETRAIN_DEFAULTS`` is a flag; ``--config`` YAML files set defaults.
"""
from engine.config import parse_config
from engine.errors import cli_main
from engine.trainer import PRETRAIN_ALIASES, PRETRAIN_DEFAULTS, PRETRAIN_HELP, PRETRAIN_TYPES, train


@cli_main
def main(argv=None) -> dict:
    cfg = parse_config(PRETRAIN_DEFAULTS, argv, description=__doc__, aliases=PRETRAIN_ALIASES,
                       types=PRETRAIN_TYPES, helps=PRETRAIN_HELP)
    return train(cfg)


if __name__ == "__main__":
    main()
