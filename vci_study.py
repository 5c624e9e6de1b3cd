"""Correlate ID variability collapse (VCI, NC1, CDNV) with transfer across checkpoints (Xu & Liu, ICML 2023).

    python vci_study.py --results results/vci_study            # reads results/vci_study/linear_probe.json

The input is train_lp.py's table (run with its default --id_metrics); every key of
``engine.vci_study.STUDY_DEFAULTS`` is a flag. ``scripts/vci_study.sh`` runs the whole sweep.
"""
from engine.config import parse_config
from engine.errors import cli_main
from engine.vci_study import STUDY_DEFAULTS, STUDY_HELP, STUDY_TYPES, run_study


@cli_main
def main(argv=None) -> list[dict]:
    cfg = parse_config(STUDY_DEFAULTS, argv, description=__doc__, types=STUDY_TYPES, helps=STUDY_HELP)
    return run_study(cfg.results, cfg.out_dir, layer=cfg.layer, lp_name=cfg.lp_name)


if __name__ == "__main__":
    main()
