"""The GPU check's report (``bench/gpu_check.py``): one JSON file and the same as Markdown."""
from __future__ import annotations

import json
import math
from pathlib import Path

from core.io import atomic_write_text

VERSION_ROWS = (("torch", "torch"), ("CUDA (torch built with)", "cuda"), ("cuDNN", "cudnn"),
                ("NVIDIA driver", "driver"), ("timm", "timm"), ("torchvision", "torchvision"), ("Python", "python"),
                ("GPUs", "gpus"), ("CPU", "cpu"), ("CPUs", "cpus"))


def _number(value) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e5 else f"{value:.4g}"
    return "-" if value is None else str(value)


def _json_safe(value):
    """NaN and infinities as null (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _table(header: list[str], rows: list[list]) -> list[str]:
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in cells]


def markdown(report: dict) -> str:
    v = report["versions"]
    lines = [f"# GPU check: {report['verdict']}", "",
             f"Device {report['device']}, {report['gpus']} GPU(s); started {report['started']} (UTC), "
             f"{report['seconds']:.0f} s" + ("; tiny sizes (a test of the check, not a measurement)"
                                              if report["tiny"] else "") + ".", ""]
    lines += _table(["software", "version"], [[label, ", ".join(v[key]) if isinstance(v.get(key), list)
                                               else _number(v.get(key))] for label, key in VERSION_ROWS])
    lines += ["", "## Checks", ""]
    lines += _table(["check", "result", "figures", "what"],
                    [[c["name"], f"**{c['status']}**", ", ".join(f"{k} {_number(x)}" for k, x in c["figures"].items()),
                      c["detail"]] for c in report["checks"]])
    bench = report["parts"].get("bench")
    if bench:
        lines += ["", "## Benchmark rows (bench/bench_gpu.py)", ""]
        lines += _table(["device", "measured", "img/s", "ms/batch", "note"],
                        [[r["device"], r["measured"], _number(r["img_per_s"]), _number(r["ms_per_batch"]), r["note"]]
                         for r in bench["rows"]])
    agreement = report["parts"].get("agreement")
    if agreement:
        lines += ["", f"## Device agreement per layer (bench/device_agreement.py): {' vs '.join(agreement['devices'])}, "
                      f"float32, TF32 off", "",
                  f"Tolerances: max|diff| / rms <= {agreement['feature_tol']:g} per layer; each NC metric within "
                  f"{agreement['metric_tol']:g} relative (+ {agreement['metric_floor']:g}). The CPU's own float32 "
                  f"rounding (float32 against float64 on the CPU) is shown beside it.", ""]
        rows = [[arch, name, _number(r["feature_error"]), _number(r["float32_rounding"]), _number(r["metric_error"]),
                 "PASS" if r["pass"] else "**FAIL**"]
                for arch, res in agreement["results"].items() for name, r in res["layers"].items()]
        lines += _table(["model", "layer", "max abs diff / rms", "CPU float32 vs float64", "NC metrics max rel diff",
                         "result"], rows)
    lines += ["", "Each part's output: `<part>.log` beside this file.", ""]
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    """``out/report.json`` and ``out/report.md``, written atomically."""
    json_path, md_path = out / "report.json", out / "report.md"
    atomic_write_text(json_path, json.dumps(_json_safe(report), indent=1) + "\n")
    atomic_write_text(md_path, markdown(report))
    return json_path, md_path
