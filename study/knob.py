"""The control knob: how far the entropy weight alpha moves collapse, what it costs, and whether the
official code's normalization pairing changes the answer.

Input: the summarized results folder of each seed of ``scripts/sweep_alpha.sh`` (``summary.json``
and ``linear_probe.json``), whose models are named ``alpha<a>_<off|on>`` (the fixed ETF projector
off or on; BatchNorm, the embedded study's models) and ``alpha<a>_<off|on>_gn`` (GroupNorm + weight
standardization).

:func:`sweep_table`: one row per (alpha, projector) of the BatchNorm models, each quantity as its
mean over seeds with the 95% Student t interval (:func:`study.claims.mean_ci`): NC1 of the ID
training features at ``last_conv``, ``encoder`` and the projector (before its L2 normalization),
the average linear-probe top-1 over the transfer sets at ``last_conv`` and ``encoder``, the average
FPR95 of the paper's protocol (energy of the layer's probe: at the L2-normalized projector with the
projector on, at ``last_conv`` without it), and the ID test top-1 of the model's own classifier.
Beside them, claim (1) at each alpha with the projector on: the paired difference of its encoder
NC1 from the baseline's (alpha 0, projector off) at ``last_conv`` and ``encoder``, with its interval
and the seeds where it holds; :func:`smallest_alpha` is the smallest alpha whose interval lies above
0 (the claim holds beyond seed noise), if any.

:func:`pairings`: the paper's four claims over seeds (paired differences and intervals, as the
study) for three pairings of a baseline (alpha 0, no projector) and ours (alpha 0.05, projector):
``batchnorm`` (both BatchNorm: the study's), ``official`` (baseline BatchNorm, ours GroupNorm + WS:
the official code's) and ``groupnorm`` (both GroupNorm + WS).

:func:`diagnostics_table`: the collapse diagnostics of the BatchNorm models, from each seed's
``nc.json`` (``eval_nc.py --splits train test``) and ``ood.json``: at each hook, NC1 and the
nearest-class-centre accuracy of the ID training and test features (the test split measured
against the training class means: does collapse generalize?), and NC5 of the layer the paper's
protocol scores (the projector when on, ``last_conv`` when off), averaged over the OOD sets; each
as mean and 95% interval over seeds.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.errors import UserError
from core.io import read_json
from core.plots import errorbar_panels
from core.tables import AVERAGE, text_table, write_results
from study import claims as C

HOOKS = ("last_conv", "encoder")
QUANTITIES = (  # key, (layer, column) per projector state (None: the projector-off models lack it), label
    ("nc1_last_conv", ("last_conv", "nc1"), ("last_conv", "nc1"), "NC1 at last_conv (train)"),
    ("nc1_encoder", ("encoder", "nc1"), ("encoder", "nc1"), "NC1 at encoder (train)"),
    ("nc1_projector", None, ("projector_raw", "nc1"), "NC1 at the projector (before L2, train)"),
    ("lp_last_conv", ("last_conv", "lp_acc_avg"), ("last_conv", "lp_acc_avg"), "transfer top-1 at last_conv (avg)"),
    ("lp_encoder", ("encoder", "lp_acc_avg"), ("encoder", "lp_acc_avg"), "transfer top-1 at encoder (avg)"),
    ("fpr95", ("last_conv", "fpr95_avg"), ("projector", "fpr95_avg"),
     "FPR95, the paper's protocol (avg; projector on: at the projector, off: at last_conv)"),
)
PAIRINGS = {"batchnorm": ("alpha0_off", "alpha0.05_on"), "official": ("alpha0_off", "alpha0.05_on_gn"),
            "groupnorm": ("alpha0_off_gn", "alpha0.05_on_gn")}


def model_name(alpha: str, projector: bool, norm: str = "bn") -> str:
    """The name scripts/sweep_alpha.sh gives a model: ``alpha<a>_<on|off>[_gn]``."""
    return f"alpha{alpha}_{'on' if projector else 'off'}" + ("_gn" if norm == "gn_ws" else "")


def parse_name(name: str) -> tuple[float, bool, str] | None:
    """(alpha, projector, norm) of a sweep model's name, None for another name."""
    parts = name.split("_")
    if not parts[0].startswith("alpha") or len(parts) not in (2, 3) or parts[1] not in ("on", "off"):
        return None
    try:
        alpha = float(parts[0][len("alpha"):])
    except ValueError:
        return None
    if len(parts) == 3 and parts[2] != "gn":
        return None
    return alpha, parts[1] == "on", "gn_ws" if len(parts) == 3 else "bn"


def load_seeds(folders: Sequence[str | Path]) -> list[dict]:
    """Per seed: ``{(model, layer): summary row}`` with each model's own ID top-1 as ``id_acc_model``."""
    seeds = []
    for folder in map(Path, folders):
        for name in ("summary.json", "linear_probe.json"):
            if not (folder / name).is_file():
                raise UserError(f"{folder / name} is missing; run scripts/sweep_alpha.sh (it evaluates and "
                                f"summarizes every seed) first")
        index = {(r["model"], r["layer"]): dict(r) for r in read_json(folder / "summary.json")}
        own = {r["model"]: r.get("id_acc") for r in read_json(folder / "linear_probe.json")["rows"]
               if r["dataset"] == AVERAGE}
        for (model, _), row in index.items():
            row["id_acc_model"] = own.get(model)
        seeds.append(index)
    return seeds


def _get(seed: dict, model: str, where: tuple | None) -> float | None:
    if where is None:
        return None
    row = seed.get((model, where[0]))
    return None if row is None or row.get(where[1]) is None else float(row[where[1]])


def _stats(values: list) -> dict:
    if not values or any(v is None for v in values):
        return {"mean": None, "low": None, "high": None}
    mean, low, high = C.mean_ci(values)
    return {"mean": mean, "low": low, "high": high}


def sweep_table(seeds: list[dict]) -> list[dict]:
    """One row per (alpha, projector) of the BatchNorm models present in every seed (see the module docstring)."""
    names = [m for m in dict.fromkeys(m for s in seeds for m, _ in s) if all(any(k[0] == m for k in s) for s in seeds)]
    grid = sorted({parse_name(m)[:2] for m in names if parse_name(m) and parse_name(m)[2] == "bn"})
    base = model_name("0", False)
    rows = []
    for alpha, projector in grid:
        model = next(m for m in names if parse_name(m) == (alpha, projector, "bn"))
        row = {"alpha": alpha, "projector": "on" if projector else "off", "model": model, "seeds": len(seeds)}
        for key, off, on, _ in QUANTITIES:
            s = _stats([_get(seed, model, on if projector else off) for seed in seeds])
            row.update({key: s["mean"], f"{key}_low": s["low"], f"{key}_high": s["high"]})
        s = _stats([seed[(model, "last_conv")].get("id_acc_model") for seed in seeds])
        row.update({"id_acc": s["mean"], "id_acc_low": s["low"], "id_acc_high": s["high"]})
        for hook in HOOKS:
            diffs = [_get(seed, model, (hook, "nc1")) - _get(seed, base, (hook, "nc1")) for seed in seeds]
            mean, low, high = C.mean_ci(diffs)
            row.update({f"claim1_diff_{hook}": mean, f"claim1_low_{hook}": low, f"claim1_high_{hook}": high,
                        f"claim1_holds_{hook}": f"{sum(d > 0 for d in diffs)}/{len(diffs)}"})
        rows.append(row)
    if not rows:
        raise UserError("the summaries hold no alpha<a>_<on|off> model in every seed; run scripts/sweep_alpha.sh")
    return rows


def smallest_alpha(table: list[dict], hook: str) -> float | None:
    """The smallest alpha, projector on, at which claim (1) holds beyond seed noise: the 95% interval of
    its encoder NC1 minus the baseline's lies above 0 (None when no alpha gets there)."""
    held = [r["alpha"] for r in table if r["projector"] == "on" and r[f"claim1_low_{hook}"] is not None
            and r[f"claim1_low_{hook}"] > 0]
    return min(held) if held else None


def pairings(seeds: list[dict], hooks: Sequence[str] = HOOKS) -> list[dict]:
    """The four claims over seeds for each pairing of :data:`PAIRINGS` whose models every seed has."""
    rows = []
    for pairing, (baseline, ours) in PAIRINGS.items():
        if not all(any(k[0] == baseline for k in s) and any(k[0] == ours for k in s) for s in seeds):
            continue
        tables = [[{**row, "model": {baseline: "baseline", ours: "ours"}[m]} for (m, _), row in s.items()
                   if m in (baseline, ours)] for s in seeds]
        rows += [{"pairing": pairing, "baseline": baseline, "ours": ours, **r} for r in C.claims_over_seeds(tables, hooks)]
    return rows


DIAGNOSTICS = (("nc1_test", "test", "nc1"), ("ncc_train", "train", "ncc_acc"), ("ncc_test", "test", "ncc_acc"))  # key, split, column


def _diagnostic_rows(folder: Path) -> dict:
    """``{(model, split, layer): nc row}`` and ``{(model, layer): average NC5 of the energy rows}`` of one seed."""
    for name in ("nc.json", "ood.json"):
        if not (folder / name).is_file():
            raise UserError(f"{folder / name} is missing; run scripts/sweep_alpha.sh (it evaluates every seed) first")
    nc = {(r["model"], r["split"], r["layer"]): r for r in read_json(folder / "nc.json")["rows"]}
    nc5 = {(r["model"], r["layer"]): r.get("nc5") for r in read_json(folder / "ood.json")["rows"]
           if r["ood"] == AVERAGE and r["scorer"] == "energy"}
    return {"nc": nc, "nc5": nc5}


def diagnostics_table(folders: Sequence[str | Path], models: Sequence[str]) -> list[dict]:
    """Per model (a BatchNorm ``alpha<a>_<on|off>`` of every seed): NC1 of the ID test split, NCC
    accuracy of the training and test splits at each hook, and NC5 where the paper's protocol scores."""
    seeds = [_diagnostic_rows(Path(f)) for f in folders]
    rows = []
    for model in models:
        alpha, projector, _ = parse_name(model)
        row = {"alpha": alpha, "projector": "on" if projector else "off", "model": model, "seeds": len(seeds)}
        for hook in HOOKS:
            for key, split, column in DIAGNOSTICS:
                stats = _stats([s["nc"].get((model, split, hook), {}).get(column) for s in seeds])
                name = f"{key}_{hook}"
                row.update({name: stats["mean"], f"{name}_low": stats["low"], f"{name}_high": stats["high"]})
        layer = "projector" if projector else "last_conv"
        stats = _stats([s["nc5"].get((model, layer)) for s in seeds])
        row.update({"nc5_layer": layer, "nc5": stats["mean"], "nc5_low": stats["low"], "nc5_high": stats["high"]})
        rows.append(row)
    return rows


def _series(table: list[dict], key: str, projector: str) -> tuple:
    """One line of a panel (an empty one, out of the legend, keeps each state's colour where it has no value)."""
    pts = [r for r in table if r["projector"] == projector and r[key] is not None]
    return (f"projector {projector}" if pts else "_nolegend_", [r["alpha"] for r in pts], [r[key] for r in pts],
            [r[f"{key}_low"] for r in pts], [r[f"{key}_high"] for r in pts])


def knob_figure(table: list[dict], path: Path, marked: dict) -> Path:
    """Each quantity against alpha (symmetric-log axis), the projector off and on, mean and 95% interval over seeds."""
    alphas = sorted({r["alpha"] for r in table})
    panels = []
    for key, _, _, label in (*QUANTITIES, ("id_acc", None, None, "ID test top-1 (the model's own classifier)")):
        series = [_series(table, key, "off"), _series(table, key, "on")]
        panel = {"title": label, "series": series, "xscale": ("symlog", 0.05), "xticks": alphas,
                 "log_y": key.startswith("nc1")}
        hook = key.removeprefix("nc1_")
        if hook in marked and marked[hook] is not None:
            panel["vline"] = (marked[hook], "claim (1) holds from here (projector on)")
        panels.append(panel)
    return errorbar_panels(panels, path, title="the entropy weight alpha: collapse, transfer, OOD detection, accuracy "
                                               "(mean and 95% interval over seeds)", xlabel="alpha")


def summarize_knob(folders: Sequence[str | Path], out_dir: str | Path) -> list[dict]:
    """:func:`sweep_table` as ``knob.{json,csv,md}``, :func:`pairings` as ``pairings.{json,csv,md}``,
    the figure ``knob.png``; printed, with the smallest alpha at which claim (1) holds."""
    seeds = load_seeds(folders)
    out_dir = Path(out_dir)
    table = sweep_table(seeds)
    marked = {hook: smallest_alpha(table, hook) for hook in HOOKS}
    extra = {"folders": [str(f) for f in folders], "confidence": C.CONFIDENCE,
             "smallest_alpha_claim1": marked}
    write_results(table, out_dir, "knob", extra=extra)
    knob_figure(table, out_dir / "knob.png", marked)
    print(text_table(table, ["alpha", "projector", "nc1_last_conv", "nc1_encoder", "nc1_projector", "lp_encoder",
                             "fpr95", "id_acc", "claim1_diff_last_conv", "claim1_low_last_conv",
                             "claim1_high_last_conv", "claim1_holds_last_conv"]))
    for hook, alpha in marked.items():
        print(f"claim (1) at {hook}, projector on: " + (f"holds beyond seed noise from alpha = {alpha:g}" if alpha
                                                         is not None else "holds beyond seed noise at no alpha swept"))
    written = ["knob.json, .csv, .md", "knob.png"]
    diagnostics = diagnostics_table(folders, [r["model"] for r in table])
    write_results(diagnostics, out_dir, "diagnostics", extra=extra)
    print(text_table(diagnostics, ["alpha", "projector", "nc1_test_encoder", "ncc_train_encoder", "ncc_test_encoder",
                                   "nc1_test_last_conv", "ncc_test_last_conv", "nc5_layer", "nc5"]))
    written.append("diagnostics.json, .csv, .md")
    rows = pairings(seeds)
    if rows:
        write_results(rows, out_dir, "pairings", extra=extra)
        print(text_table(rows, ["pairing", "hook", "number", "ours_mean", "op", "other_mean", "diff_mean",
                                "diff_ci_low", "diff_ci_high", "holds_in"]))
        written.append("pairings.json, .csv, .md")
    print(f"wrote in {out_dir}: {', '.join(written)}")
    return table
