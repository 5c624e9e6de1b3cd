"""Out-of-distribution scorers (higher score = more in-distribution) and detection metrics.

    scorer = build_scorer("energy")                  # any name of SCORERS (22: see ood.registry)
    scorer.fit(train_features, train_labels, weight=W, bias=b)
    id_scores, ood_scores = scorer.score(id_features), scorer.score(ood_features)
    detection_metrics(id_scores, ood_scores)         # auroc, aupr_in, aupr_out, fpr95, fpr95_ood_positive
    fpr95_strict(id_scores, ood_scores)              # NC-OOD's own FPR95 (strict '>'), for comparison
    parse_scorer_spec("ash:percentile=65")           # -> ("ash", {"percentile": 65})
    search_candidates("react")                       # OpenOOD's sweep grid, the defaults first
"""
from ood.activation import ASHScorer, DICEScorer, ReActScorer, SCALEScorer, VRAScorer
from ood.base import Scorer
from ood.boundary import FDBDScorer, NCIScorer
from ood.density import JITTER_LADDER, GMMScorer, MahalanobisScorer, RMDSScorer
from ood.logit_scorers import EnergyScorer, MaxLogitScorer, MSPScorer
from ood.metrics import detection_metrics, fpr95_strict
from ood.neighbors import KNNScorer
from ood.probability import GENScorer, GradNormScorer, KLMScorer
from ood.registry import SCORERS, build_scorer, parse_scorer_spec, scorer_options, search_candidates
from ood.relation import NNGuideScorer, RelationScorer, SHEScorer
from ood.subspace import NECOScorer, ViMScorer, vim_default_dim

__all__ = [
    "SCORERS", "build_scorer", "parse_scorer_spec", "scorer_options", "search_candidates",
    "detection_metrics", "fpr95_strict", "Scorer",
    "MSPScorer", "MaxLogitScorer", "EnergyScorer", "GMMScorer", "MahalanobisScorer",
    "KNNScorer", "ViMScorer", "NECOScorer", "JITTER_LADDER", "vim_default_dim",
    "ReActScorer", "ASHScorer", "SCALEScorer", "DICEScorer", "VRAScorer", "GENScorer", "KLMScorer",
    "GradNormScorer", "RMDSScorer", "SHEScorer", "RelationScorer", "NNGuideScorer", "FDBDScorer", "NCIScorer",
]
