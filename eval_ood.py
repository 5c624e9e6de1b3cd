"""Detect out-of-distribution inputs layer by layer (energy of a linear probe by default).

    python eval_ood.py --ckpt runs/base/model.pth runs/nc/model.pth --names baseline ours \
        --dataset fashion_mnist:classes=0-5 --ood near=fashion_mnist:classes=6-9 animal_mnist digits textures

Scores: higher = more in-distribution. FPR95 = OOD accepted when 95% of ID is kept (the paper's).
The flags: ``evaluate.ood.OOD_DEFAULTS`` (``--help``), defaults from a ``--config`` YAML file.
"""
from core.config import command
from evaluate.ood import OOD_OPTIONS, run_ood

main = command(OOD_OPTIONS, run_ood, __doc__)

if __name__ == "__main__":
    main()
