"""Measure neural collapse layer by layer (NC1-NC4, CDNV, VCI, ETF errors).

    python eval_nc.py --ckpt runs/base/model.pth runs/nc/model.pth --names baseline ours \
        --dataset fashion_mnist:classes=0-5 --out_dir results/nc

Its flags are the keys of ``evaluate.nc.NC_DEFAULTS`` (``--help``); a ``--config`` YAML file sets defaults.
"""
from core.config import command
from evaluate.nc import NC_OPTIONS, run_nc

main = command(NC_OPTIONS, run_nc, __doc__)

if __name__ == "__main__":
    main()
