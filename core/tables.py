"""Result tables: rows (dicts) written as JSON + CSV + Markdown and printed for the terminal.

Every evaluator and study writes its results through :func:`write_results`; ``AVERAGE`` is the
label of the rows that average a model's per-dataset rows (the OOD sets of ``eval_ood.py``, the
downstream sets of ``train_lp.py``), which the studies read back.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Sequence

import torch

from core.io import atomic_write_text

AVERAGE = "average"  # the dataset / OOD-set label of a row averaging a model's per-set rows at one layer


def _fmt(value, digits: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.{digits}g}"
    return "" if value is None else str(value)


def _columns(rows: Sequence[dict], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """Rows (dicts) as a GitHub Markdown table; floats rounded to ``digits``."""
    cols = _columns(rows, columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c), digits) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def text_table(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """Rows (dicts) as an aligned plain-text table for the terminal."""
    cols = _columns(rows, columns)
    cells = [[_fmt(row.get(c), digits) for c in cols] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(out) + "\n"


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_results(rows: Sequence[dict], out_dir: str | os.PathLike, name: str,
                  columns: Sequence[str] | None = None, extra: dict | None = None,
                  digits: int = 4, bare_json: bool = False) -> dict[str, Path]:
    """Write ``rows`` as ``<name>.json`` (``{"rows": [...], **extra}``, or the bare list of rows
    with ``bare_json``), ``<name>.csv`` and ``<name>.md`` under ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    cols = _columns(rows, columns)
    payload = [dict(r) for r in rows] if bare_json else {"rows": [dict(r) for r in rows], **(extra or {})}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return {
        "json": atomic_write_text(out_dir / f"{name}.json", json.dumps(payload, indent=2, default=_json_default) + "\n"),
        "csv": atomic_write_text(out_dir / f"{name}.csv", buf.getvalue()),
        "md": atomic_write_text(out_dir / f"{name}.md", markdown_table(rows, cols, digits)),
    }


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
