"""The training-length sweep of the embedded study: where the baseline reaches its terminal phase,
whether the paper's claims show at each length, and what each length costs.

Each folder is one study (``scripts/reproduce_embedded.sh`` with one ``EPOCHS``): per seed a
results folder ``seed<N>/`` holding ``summary.json``, ``curves.json`` (the training logs) and
``timing.json`` (wall time of training and of evaluation), and the claims over seeds
``claims.json``. :func:`sweep_table` makes one row per length:

- the terminal phase of the baseline: its last-epoch top-1 on the fixed clean training subset
  (``clean_train_acc1``, the monitor's) and on the validation set, and how much the clean training
  top-1 and the encoder's NC1 (monitor) still moved over the last quarter of training
  (``*_late_change``: last epoch minus the epoch at 75% of training);
- NC1 of the evaluated encoder (train split) of ``baseline`` and ``ours`` at each hook point;
- the cost: training seconds per run (sum of the logged epoch and monitor seconds), training
  throughput (median img/s over the epochs of all runs), monitor seconds per epoch and the wall
  time of one seed's evaluation.

:func:`sweep_claims` makes one row per (length, hook, claim) with the paired difference and its
CI and the seeds holding, from each study's ``claims.json``.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

from core.errors import UserError
from core.io import read_json


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _late_change(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    if len(values) < 2:
        return None
    return values[-1] - values[int(round(0.75 * (len(values) - 1)))]


def load_study(folder: str | Path) -> dict:
    """A study folder's seeds (summary table, curves, timing) and claims over seeds."""
    folder = Path(folder)
    claims = folder / "claims.json"
    if not claims.is_file():
        raise UserError(f"{claims} is missing; run scripts/reproduce_embedded.sh with BASE={folder} first")
    seeds = sorted(p for p in folder.glob("seed*") if (p / "summary.json").is_file())
    if not seeds:
        raise UserError(f"{folder} holds no seed<N>/summary.json; it is not a study folder")
    study = {"folder": str(folder), "claims": read_json(claims)["rows"], "seeds": []}
    for seed in seeds:
        for name in ("curves.json", "timing.json"):
            if not (seed / name).is_file():
                raise UserError(f"{seed / name} is missing; the sweep needs the training logs and timings that "
                                f"scripts/demo.sh writes (summarize.py --runs)")
        study["seeds"].append({"summary": read_json(seed / "summary.json"),
                               "curves": read_json(seed / "curves.json")["models"],
                               "timing": read_json(seed / "timing.json")})
    return study


def _value(table: list[dict], model: str, layer: str, key: str) -> float | None:
    return next((r.get(key) for r in table if r["model"] == model and r["layer"] == layer), None)


def sweep_table(studies: Sequence[dict], hooks: Sequence[str] = ("last_conv", "encoder")) -> list[dict]:
    rows = []
    for study in studies:
        seeds = study["seeds"]
        base = [s["curves"]["baseline"] for s in seeds]
        epochs = {len(c) for c in base}
        if len(epochs) != 1:
            raise UserError(f"{study['folder']}: the seeds trained for different numbers of epochs ({sorted(epochs)})")
        row = {"epochs": epochs.pop(), "seeds": len(seeds),
               "train_per_class": seeds[0]["timing"].get("train_per_class")}
        for key, name in (("clean_train_acc1", "base_clean_train_top1"), ("val_acc1", "base_val_top1")):
            row[name], row[f"{name}_std"] = _mean_std([c[-1].get(key) for c in base])
        row["base_clean_train_top1_late_change"], _ = _mean_std([_late_change(c, "clean_train_acc1") for c in base])
        row["base_monitor_nc1_late_change"], _ = _mean_std([_late_change(c, "nc1/encoder") for c in base])
        for hook in hooks:
            for model in ("baseline", "ours"):
                values = [_value(s["summary"], model, hook, "nc1") for s in seeds]
                if all(v is not None for v in values):
                    row[f"{model}_nc1_{hook}"], row[f"{model}_nc1_{hook}_std"] = _mean_std(values)
        runs = [records for s in seeds for records in s["curves"].values()]
        row["train_seconds_per_run"], _ = _mean_std(
            [sum(r["seconds"] + r.get("monitor_seconds", 0.0) for r in records) for records in runs])
        row["img_per_s"] = statistics.median(r["img_per_s"] for records in runs for r in records)
        row["monitor_seconds_per_epoch"], _ = _mean_std(
            [r.get("monitor_seconds") for records in runs for r in records])
        row["eval_seconds_per_seed"], _ = _mean_std([s["timing"]["eval_seconds"] for s in seeds])
        row["wall_seconds_per_seed"], _ = _mean_std([s["timing"]["seconds"] for s in seeds])
        rows.append(row)
    return sorted(rows, key=lambda r: r["epochs"])


def sweep_claims(studies: Sequence[dict]) -> list[dict]:
    rows = []
    for study in studies:
        epochs = len(study["seeds"][0]["curves"]["baseline"])
        for c in study["claims"]:
            rows.append({"epochs": epochs, "hook": c["hook"], "number": c["number"], "claim": c["claim"],
                         "ours_mean": c["ours_mean"], "other_mean": c["other_mean"], "diff_mean": c["diff_mean"],
                         "diff_ci_low": c["diff_ci_low"], "diff_ci_high": c["diff_ci_high"],
                         "holds_in": c["holds_in"]})
    return sorted(rows, key=lambda r: (r["hook"], r["number"], r["epochs"]))


def _series(rows: list[dict], key: str, label: str, spread: str | None = None) -> tuple | None:
    pts = [r for r in rows if r.get(key) is not None]
    if not pts:
        return None
    sd = [r.get(spread) if spread else None for r in pts]
    ys = [r[key] for r in pts]
    return (label, [r["epochs"] for r in pts], ys, [y - s if s is not None else None for y, s in zip(ys, sd)],
            [y + s if s is not None else None for y, s in zip(ys, sd)])


def sweep_figure(table: list[dict], claims: list[dict], path: Path, hooks: Sequence[str]) -> Path:
    from core.plots import errorbar_panels
    from study.claims import CLAIMS

    panels = [{"title": "baseline top-1 at the last epoch (+- std over seeds)",
               "series": [s for s in (_series(table, "base_clean_train_top1", "clean train subset",
                                              "base_clean_train_top1_std"),
                                      _series(table, "base_val_top1", "validation", "base_val_top1_std")) if s]},
              {"title": "NC1 of the evaluated encoder (train split, +- std)", "log_y": True,
               "series": [s for hook in hooks for model in ("baseline", "ours")
                          for s in [_series(table, f"{model}_nc1_{hook}", f"{model} {hook}", f"{model}_nc1_{hook}_std")]
                          if s]}]
    for number, (text, _, op, _) in enumerate(CLAIMS, 1):
        series = []
        for hook in hooks:
            pts = [c for c in claims if c["number"] == number and c["hook"] == hook]
            if pts:
                series.append((hook, [c["epochs"] for c in pts], [c["diff_mean"] for c in pts],
                               [c["diff_ci_low"] for c in pts], [c["diff_ci_high"] for c in pts]))
        want = "> 0" if op == ">" else "< 0"
        panels.append({"title": f"({number}) ours - other, 95% CI (holds: {want})", "series": series,
                       "zero_line": True})
    panels.append({"title": "training seconds per run (measured; see the load)",
                   "series": [s for s in [_series(table, "train_seconds_per_run", "per run")] if s]})
    return errorbar_panels(panels, path, title="training-length sweep", xlabel="epochs")


def summarize_sweep(folders: Sequence[str | Path], out_dir: str | Path) -> list[dict]:
    """:func:`sweep_table` and :func:`sweep_claims` written as ``sweep.{json,csv,md}`` and
    ``sweep_claims.{json,csv,md}``, with the figure ``sweep.png``; both tables printed."""
    from core.tables import text_table, write_results

    out_dir = Path(out_dir)
    studies = [load_study(f) for f in folders]
    lengths = [len(s["seeds"][0]["curves"]["baseline"]) for s in studies]
    if len(set(lengths)) != len(lengths):
        raise UserError(f"two study folders trained for the same number of epochs ({sorted(lengths)}); pass each "
                        f"length once")
    table, claims = sweep_table(studies), sweep_claims(studies)
    hooks = list(dict.fromkeys(c["hook"] for c in claims))
    extra = {"folders": [str(f) for f in folders]}
    write_results(table, out_dir, "sweep", extra=extra)
    write_results(claims, out_dir, "sweep_claims", extra=extra)
    sweep_figure(table, claims, out_dir / "sweep.png", hooks)
    print(text_table(table))
    print(text_table(claims, ["epochs", "hook", "number", "ours_mean", "other_mean", "diff_mean", "diff_ci_low",
                              "diff_ci_high", "holds_in"]))
    print(f"wrote in {out_dir}: sweep.json, .csv, .md, sweep_claims.json, .csv, .md, sweep.png")
    return table
