"""The evaluations of frozen checkpoints, all over the feature cache: the shared run set-up
(:mod:`evaluate.runs`), the official linear probes (:mod:`evaluate.probe`), neural collapse per
layer (:mod:`evaluate.nc`, ``eval_nc.py``), OOD detection per layer (:mod:`evaluate.ood`,
``eval_ood.py``) and transfer by linear probing (:mod:`evaluate.transfer`, ``train_lp.py``)."""
