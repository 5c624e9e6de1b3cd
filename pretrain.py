"""Pretrain a backbone with or without neural-collapse control.

    python pretrain.py --config configs/embedded_cpu.yaml --alpha 0.05 --output_dim 128 --hidden_mlp 512
    torchrun --nproc_per_node=4 pretrain.py --config configs/paper/resnet18_nc.yaml --data /data/ImageNet-100
    python pretrain.py --config configs/paper/vit_small_nc.yaml --print_config

Every key of ``train.options.PRETRAIN_DEFAULTS`` is a flag; a ``--config`` YAML file sets defaults.
"""
from core.config import command
from train.loop import train
from train.options import PRETRAIN_OPTIONS

main = command(PRETRAIN_OPTIONS, train, __doc__)

if __name__ == "__main__":
    main()
