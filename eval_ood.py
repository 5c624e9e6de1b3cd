"""Detect out-of-distribution inputs layer by layer (energy of a linear probe by default).

    python eval_ood.py --ckpt runs/base/model.pth runs/nc/model.pth --names baseline ours \
        --dataset fashion_mnist:classes=0-5 --ood near=fashion_mnist:classes=6-9 animal_mnist digits textures

Every key of ``engine.ood_eval.OOD_DEFAULTS`` is a flag; ``--config`` YAML files set defaults.
Scores: higher = more in-distribution. FPR95 = OOD accepted when 95% of ID is kept (the paper's).
"""
from engine.config import parse_config
from engine.errors import cli_main
from engine.ood_eval import OOD_DEFAULTS, OOD_HELP, OOD_TYPES, evaluate_ood, report_ood


@cli_main
def main(argv=None) -> list[dict]:
    cfg = parse_config(OOD_DEFAULTS, argv, description=__doc__, types=OOD_TYPES, helps=OOD_HELP)
    rows, scores = evaluate_ood(cfg)
    report_ood(cfg, rows, scores)
    return rows


if __name__ == "__main__":
    main()
