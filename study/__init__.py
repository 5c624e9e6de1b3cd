"""Studies over result files (no model code): the paper's Table 1, Figure 1 and claims
(:mod:`study.summary`, :mod:`study.claims`), the training-length sweep (:mod:`study.sweep`) and the
VCI study (:mod:`study.vci_study`). ``summarize.py`` and ``vci_study.py`` call them."""
