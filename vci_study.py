"""Correlate ID variability collapse (VCI, NC1, CDNV) with transfer across checkpoints (Xu & Liu, ICML 2023).

    python vci_study.py --results results/vci_study            # reads results/vci_study/linear_probe.json

The input is train_lp.py's table (run with its default --id_metrics); every key of
``study.vci_study.STUDY_DEFAULTS`` is a flag. ``scripts/vci_study.sh`` runs the whole sweep.
"""
from core.config import command
from study.vci_study import STUDY_OPTIONS, run_vci_study

main = command(STUDY_OPTIONS, run_vci_study, __doc__)

if __name__ == "__main__":
    main()
