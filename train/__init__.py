"""Pretraining: the flags (:mod:`train.options`), the optimization recipe (:mod:`train.recipes`),
building a run from its configuration (:mod:`train.run`), the guards that keep a run's results
(:mod:`train.guards`), the per-epoch collapse monitor (:mod:`train.monitor`) and the loop itself
(:mod:`train.loop`). ``pretrain.py`` calls :func:`train.loop.train`."""
