"""OOD generalization by linear probing: a linear probe per checkpoint x downstream dataset x layer.

    python train_lp.py --ckpt runs/base/model.pth runs/nc/model.pth --names baseline ours \
        --transfer heldout=fashion_mnist:classes=6-9 animal_mnist digits --out_dir results/lp

Every key of ``engine.transfer.TRANSFER_DEFAULTS`` is a flag; ``--config`` YAML files set defaults.
"""
from engine.config import parse_config
from engine.errors import cli_main
from engine.transfer import TRANSFER_DEFAULTS, TRANSFER_HELP, TRANSFER_TYPES, evaluate_transfer, report_transfer


@cli_main
def main(argv=None) -> list[dict]:
    cfg = parse_config(TRANSFER_DEFAULTS, argv, description=__doc__, types=TRANSFER_TYPES, helps=TRANSFER_HELP)
    rows = evaluate_transfer(cfg)
    report_transfer(cfg, rows)
    return rows


if __name__ == "__main__":
    main()
