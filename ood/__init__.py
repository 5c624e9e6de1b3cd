"""Out-of-distribution scorers (higher score = more in-distribution) and detection metrics.

    scorer = build_scorer("energy")                  # or msp, maxlogit, gmm, mahalanobis, knn, vim, neco
    scorer.fit(train_features, train_labels, weight=W, bias=b)
    id_scores, ood_scores = scorer.score(id_features), scorer.score(ood_features)
    detection_metrics(id_scores, ood_scores)         # auroc, aupr_in, aupr_out, fpr95, fpr95_ood_positive
    fpr95_strict(id_scores, ood_scores)              # NC-OOD's own FPR95 (strict '>'), for comparison
"""
from ood.base import Scorer
from ood.density import JITTER_LADDER, GMMScorer, MahalanobisScorer
from ood.logit_scorers import EnergyScorer, MaxLogitScorer, MSPScorer
from ood.metrics import detection_metrics, fpr95_strict
from ood.neighbors import KNNScorer
from ood.registry import SCORERS, build_scorer
from ood.subspace import NECOScorer, ViMScorer, vim_default_dim

__all__ = [
    "SCORERS", "build_scorer", "detection_metrics", "fpr95_strict", "Scorer",
    "MSPScorer", "MaxLogitScorer", "EnergyScorer", "GMMScorer", "MahalanobisScorer",
    "KNNScorer", "ViMScorer", "NECOScorer", "JITTER_LADDER", "vim_default_dim",
]
