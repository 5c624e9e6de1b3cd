"""Per-sample OOD scores in one file, for the user's own plots and significance tests.

``eval_ood.py --save_scores`` writes ``<out_name>_scores.csv.gz``: one line per sample and
(model, layer, scorer, options, search), with the columns ``model, layer, scorer, options, search,
set, index, score``: ``scorer`` is the scorer's name, ``options`` the options set for it
(``gamma=0.5;M=3``: semicolons, so that no field holds a comma), ``search`` chosen / default with
``--search`` (else empty), ``set`` = ``id`` for the ID test set, else the OOD set's label,
``index`` the sample's position in that set. pandas reads it with ``pd.read_csv(path)``, numpy
with ``np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")``. Scores are
written as Python's shortest round-trip repr of the float64, so they read back exactly.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

from core.io import atomic_write_bytes

SCORE_COLUMNS = ("model", "layer", "scorer", "options", "search", "set", "index", "score")


def write_scores(scores: dict, path: str | Path) -> Path:
    """``scores``: (model, layer, scorer label, search, options) -> (ID scores, {OOD label: scores})."""
    text = io.StringIO()
    text.write(",".join(SCORE_COLUMNS) + "\n")
    for (model, layer, label, search, options), (id_scores, ood) in scores.items():
        name = label.split(":", 1)[0]
        for set_name, values in {"id": id_scores, **ood}.items():
            fields = [model, layer, name, options.replace(",", ";"), search, set_name]
            if any("," in field or "\n" in field for field in fields):
                raise ValueError(f"a model, layer or set name holds a comma ({', '.join(map(repr, fields))}); "
                                 f"rename it to write the scores file")
            prefix = ",".join(fields)
            text.writelines(f"{prefix},{i},{v!r}\n" for i, v in enumerate(np.asarray(values, np.float64).tolist()))
    return atomic_write_bytes(path, gzip.compress(text.getvalue().encode("utf-8"), mtime=0))
