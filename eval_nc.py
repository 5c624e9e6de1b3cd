"""Measure neural collapse layer by layer (NC1-NC4, CDNV, VCI, ETF errors).

    python eval_nc.py --ckpt runs/base/model.pth runs/nc/model.pth --names baseline ours \
        --dataset fashion_mnist:classes=0-5 --out_dir results/nc

Every key of ``engine.nc_eval.NC_DEFAULTS`` is a flag; ``--config`` YAML files set defaults.
"""
from engine.config import parse_config
from engine.errors import cli_main
from engine.nc_eval import NC_DEFAULTS, NC_HELP, NC_TYPES, evaluate_nc, report_nc


@cli_main
def main(argv=None) -> list[dict]:
    cfg = parse_config(NC_DEFAULTS, argv, description=__doc__, types=NC_TYPES, helps=NC_HELP)
    rows = evaluate_nc(cfg)
    report_nc(cfg, rows)
    return rows


if __name__ == "__main__":
    main()
