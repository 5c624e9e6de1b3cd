"""OOD generalization by linear probing: a linear probe per checkpoint x downstream dataset x layer.

    python train_lp.py --ckpt runs/base/model.pth runs/nc/model.pth --names baseline ours \
        --transfer heldout=fashion_mnist:classes=6-9 animal_mnist digits --out_dir results/lp

Flags: each key of ``evaluate.transfer.TRANSFER_DEFAULTS``; ``--config`` reads defaults from YAML.
"""
from core.config import command
from evaluate.transfer import TRANSFER_OPTIONS, run_transfer

main = command(TRANSFER_OPTIONS, run_transfer, __doc__)

if __name__ == "__main__":
    main()
