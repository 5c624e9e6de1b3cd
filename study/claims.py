"""The paper's four claims and its two ingredients, on summary tables (study/summary.py).

A summary table is one seed's list of rows ``{model, layer, nc1, fpr95_avg, lp_acc_avg, ...}``.
The models are the arms of a 2 x 2 ablation on the same data, model and normalization
(:data:`ARMS`): ``baseline`` (neither ingredient), ``entropy`` (the entropy term alone, no
projector), ``projector`` (the fixed simplex-ETF projector alone, alpha 0) and ``ours`` (both).

Each claim compares ``ours`` with another side at a **hook point** of the encoder: ``last_conv``
(the paper's: the last convolution's output before its norm, residual add and ReLU, pooled) or
``encoder`` (the pooled embedding the entropy term acts on). The projector is read as the
official code reads it: NC1 and transfer on its raw output (``projector_raw``; the L2-normalized
``projector`` when the raw one was not evaluated), OOD detection on the normalized output
(``projector``).

- :func:`seed_claims`: the four claims on one seed, each with both numbers and whether it holds;
- :func:`claims_over_seeds`: per claim both sides' mean and std over seeds (ddof 1), the paired
  difference ours - other per seed with its mean and 95% confidence interval (Student t, df = n - 1),
  and the seeds where it holds;
- :func:`ablation`: which ingredient moves a metric: per seed the main effect of the entropy term
  ((entropy - baseline) + (ours - projector)) / 2, of the projector ((projector - baseline) +
  (ours - entropy)) / 2, and their interaction (ours - projector) - (entropy - baseline), each with
  its mean and 95% CI over seeds.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

from scipy import stats

from core.errors import UserError

ARMS = {"baseline": (0, 0), "entropy": (1, 0), "projector": (0, 1), "ours": (1, 1)}  # (entropy term, projector)
HOOKS = ("last_conv", "encoder")
PROJECTOR_NC = ("projector_raw", "projector")   # NC1 and transfer of the projector: the raw output first
PROJECTOR_OOD = "projector"                     # OOD detection: the L2-normalized output
CONFIDENCE = 0.95
BASELINE_SUFFIX, NC_SUFFIX = "_baseline", "_nc"   # the paper chain's experiment names, <arch>_in100_<variant>

# (text, ours side, comparison, other side); a side is (model, layer role, key), a role is
# 'hook', 'projector_nc' or 'projector_ood'
CLAIMS = (
    ("entropy regularization leaves the encoder less collapsed (higher NC1) than the baseline's",
     ("ours", "hook", "nc1"), ">", ("baseline", "hook", "nc1")),
    ("the projector is more collapsed (lower NC1) than the encoder",
     ("ours", "projector_nc", "nc1"), "<", ("ours", "hook", "nc1")),
    ("the projector detects OOD better (lower average FPR95) than the baseline's penultimate layer",
     ("ours", "projector_ood", "fpr95_avg"), "<", ("baseline", "hook", "fpr95_avg")),
    ("the encoder transfers better (higher average probe top-1) than the baseline's",
     ("ours", "hook", "lp_acc_avg"), ">", ("baseline", "hook", "lp_acc_avg")),
)
ABLATION_METRICS = (("nc1", "NC1 (train)"), ("lp_acc_avg", "transfer top-1 (avg)"), ("fpr95_avg", "FPR95 (avg)"))


def _index(table: Sequence[dict]) -> dict[tuple[str, str], dict]:
    return {(row["model"], row["layer"]): row for row in table}


def _layer(index: dict, model: str, role: str, hook: str) -> str:
    if role == "hook":
        return hook
    if role == "projector_ood":
        return PROJECTOR_OOD
    return next((layer for layer in PROJECTOR_NC if (model, layer) in index), PROJECTOR_NC[0])


def _value(index: dict, model: str, layer: str, key: str) -> float:
    row = index.get((model, layer))
    if row is None or row.get(key) is None:
        models = sorted({m for m, _ in index})
        raise UserError(f"a summary has no '{key}' for model '{model}' at layer '{layer}' (its models: "
                        f"{', '.join(models)}); evaluate that layer and name the checkpoints "
                        f"{' '.join(ARMS)} (--names)")
    return float(row[key])


def hooks_in(tables: Sequence[Sequence[dict]], hooks: Sequence[str] = HOOKS) -> list[str]:
    """The hook points evaluated for both ``baseline`` and ``ours`` in every table, in ``hooks`` order."""
    indexes = [_index(t) for t in tables]
    return [h for h in hooks if all(("baseline", h) in ix and ("ours", h) in ix for ix in indexes)]


def hook_words(hook: str) -> str:
    return "the paper's hook point" if hook == "last_conv" else "the pooled embedding"


def model_pairs(models: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(name, baseline model, NC model)`` of every pair among ``models`` whose claims can be checked:
    the embedded demo's ``baseline`` and ``ours`` (name ``""``), and each ``<name>_baseline`` with its
    ``<name>_nc`` (the paper chain's experiment names, e.g. ``resnet18_in100``), in order of appearance."""
    present = list(dict.fromkeys(models))
    pairs = [("", "baseline", "ours")] if {"baseline", "ours"} <= set(present) else []
    for model in present:
        name = model.removesuffix(BASELINE_SUFFIX)
        if model != name and name + NC_SUFFIX in present:
            pairs.append((name, model, name + NC_SUFFIX))
    return pairs


def pair_claims(table: Sequence[dict], baseline: str, ours: str) -> list[dict]:
    """The four claims of :func:`seed_claims` for the models ``baseline`` and ``ours`` of ``table``, at
    the first hook point both were evaluated at, their labels naming the two models; [] without one."""
    sides = {baseline: "baseline", ours: "ours"}
    renamed = [{**row, "model": sides[row["model"]]} for row in table if row["model"] in sides]
    hooks = hooks_in([renamed])
    if not hooks:
        return []
    claims = seed_claims(renamed, hooks[0])
    real = {"baseline": baseline, "ours": ours}
    for claim in claims:
        for key in ("ours_label", "other_label"):
            arm, _, rest = claim[key].partition(" ")
            claim[key] = f"{real[arm]} {rest}"
    return claims


def has_arms(table: Sequence[dict], arms: Sequence[str]) -> bool:
    return set(arms) <= {row["model"] for row in table}


def _holds(a: float, op: str, b: float) -> bool:
    return a > b if op == ">" else a < b


def _side(index: dict, side: tuple, hook: str) -> tuple[str, float]:
    model, role, key = side
    layer = _layer(index, model, role, hook)
    return f"{model} {layer} {key}", _value(index, model, layer, key)


def seed_claims(table: Sequence[dict], hook: str) -> list[dict]:
    """The four claims on one seed's table at ``hook``: ``claim``, ``hook``, ``ours`` / ``other``
    (the two numbers), their labels (model, layer, key), ``op`` and ``holds``."""
    index = _index(table)
    rows = []
    for number, (text, lhs, op, rhs) in enumerate(CLAIMS, 1):
        (ours_label, ours), (other_label, other) = _side(index, lhs, hook), _side(index, rhs, hook)
        rows.append({"number": number, "claim": text, "hook": hook, "ours_label": ours_label, "ours": ours,
                     "op": op, "other_label": other_label, "other": other, "holds": _holds(ours, op, other)})
    return rows


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None]:
    """Mean of ``values`` and its two-sided confidence interval from Student's t with n - 1 degrees
    of freedom (scipy.stats.t); no interval for fewer than two values."""
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    sem = statistics.stdev(values) / math.sqrt(len(values))
    if sem == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def claims_over_seeds(tables: Sequence[Sequence[dict]], hooks: Sequence[str]) -> list[dict]:
    """One row per (hook, claim) over the seeds' tables: both sides' mean and std, the paired
    difference ours - other (mean and 95% CI), and ``holds_in`` = seeds holding / seeds run."""
    if not tables:
        raise UserError("no seeds to check the claims on")
    rows = []
    for hook in hooks:
        per_seed = [seed_claims(t, hook) for t in tables]
        for i in range(len(CLAIMS)):
            seeds = [claims[i] for claims in per_seed]
            ours, other = [c["ours"] for c in seeds], [c["other"] for c in seeds]
            diff, low, high = mean_ci([a - b for a, b in zip(ours, other)])
            held = sum(c["holds"] for c in seeds)
            first = seeds[0]
            rows.append({"hook": hook, "number": first["number"], "claim": first["claim"],
                         "ours_label": first["ours_label"], "ours_mean": statistics.fmean(ours), "ours_std": _std(ours),
                         "op": first["op"], "other_label": first["other_label"], "other_mean": statistics.fmean(other),
                         "other_std": _std(other), "diff_mean": diff, "diff_ci_low": low, "diff_ci_high": high,
                         "seeds_holding": held, "seeds_run": len(seeds), "holds_in": f"{held}/{len(seeds)}"})
    return rows


def ablation(tables: Sequence[Sequence[dict]], hooks: Sequence[str],
             metrics: Sequence[tuple[str, str]] = ABLATION_METRICS) -> list[dict]:
    """The 2 x 2 over seeds, one row per (hook, metric): each arm's mean and std, and the main
    effects of the entropy term and of the projector and their interaction (mean, 95% CI)."""
    missing = [i for i, t in enumerate(tables) if not has_arms(t, ARMS)]
    if missing:
        raise UserError(f"the 2 x 2 needs the four arms {', '.join(ARMS)} in every seed; seed folder(s) "
                        f"{', '.join(map(str, missing))} lack some")
    rows = []
    for hook in hooks:
        for key, label in metrics:
            cells = {arm: [_value(_index(t), arm, hook, key) for t in tables] for arm in ARMS}
            b, e, p, o = (cells[arm] for arm in ("baseline", "entropy", "projector", "ours"))
            effects = {
                "entropy": [((e[s] - b[s]) + (o[s] - p[s])) / 2 for s in range(len(tables))],
                "projector": [((p[s] - b[s]) + (o[s] - e[s])) / 2 for s in range(len(tables))],
                "interaction": [(o[s] - p[s]) - (e[s] - b[s]) for s in range(len(tables))],
            }
            row = {"hook": hook, "metric": key, "label": label, "seeds_run": len(tables)}
            for arm, values in cells.items():
                row[f"{arm}_mean"], row[f"{arm}_std"] = statistics.fmean(values), _std(values)
            for name, values in effects.items():
                row[f"{name}_effect"], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = mean_ci(values)
            rows.append(row)
    return rows


def _ci_text(low: float | None, high: float | None) -> str:
    return f"[{low:+.4f}, {high:+.4f}]" if low is not None else "[no CI: one seed]"


def describe_seed_claims(claims: Sequence[dict]) -> str:
    """The claims of one seed in words, one line each."""
    lines = []
    for c in claims:
        verdict = "holds" if c["holds"] else "does not hold"
        lines.append(f"  ({c['number']}) {verdict}: {c['claim']} ({c['ours_label']} {c['ours']:.4f} vs "
                     f"{c['other_label']} {c['other']:.4f})")
    return "\n".join(lines)


def describe_claims_over_seeds(rows: Sequence[dict]) -> str:
    """The claims over seeds in words, one line each (grouped by hook point)."""
    lines = []
    for r in rows:
        std = lambda s: f" +- {s:.4f}" if s is not None else ""
        lines.append(f"  [{r['hook']}] ({r['number']}) holds in {r['holds_in']} seeds: {r['claim']}: "
                     f"{r['ours_label']} {r['ours_mean']:.4f}{std(r['ours_std'])} {r['op']} {r['other_label']} "
                     f"{r['other_mean']:.4f}{std(r['other_std'])}; difference {r['diff_mean']:+.4f} "
                     f"{_ci_text(r['diff_ci_low'], r['diff_ci_high'])}")
    return "\n".join(lines)


def describe_ablation(rows: Sequence[dict]) -> str:
    """Which ingredient moves each metric, in words: an effect whose 95% CI excludes 0 moves it."""
    lines = []
    for r in rows:
        parts = []
        for name in ("entropy", "projector", "interaction"):
            low, high = r[f"{name}_ci_low"], r[f"{name}_ci_high"]
            sure = low is not None and (low > 0 or high < 0)
            parts.append(f"{name} {r[f'{name}_effect']:+.4f} {_ci_text(low, high)}{' *' if sure else ''}")
        lines.append(f"  [{r['hook']}] {r['label']}: " + ";  ".join(parts))
    return "\n".join(lines) + "\n  (* = the 95% CI excludes 0)"
