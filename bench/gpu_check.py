"""A CUDA machine's check, in one command (``bash scripts/gpu_check.sh``, under 8 minutes).

Each part runs as its own process with a time limit (its own, or what is left of the whole check's
budget of 460 s: the smoke chain runs last and gets the time the others leave), so a part that fails,
hangs or is missing is a FAIL line in the report, never the end of the check. In this order:

- ``bench``: ``bench/bench_gpu.py --json``: our bf16 training step against a bare one for ResNet-18 and
  ViT-T at 224 px (PASS at >= 0.9 of bare), the ImageFolder loader's img/s at 1, 2, 4, ... workers, and
  NVIDIA DALI's GPU JPEG decode when ``nvidia.dali`` is importable (SKIP otherwise: DALI is optional);
- ``agreement``: ``bench/device_agreement.py``: one checkpoint's features and NC metrics on the CPU and on
  CUDA in float32 with TF32 off, within the tolerances that module states and justifies;
- ``ddp``: with 2 or more GPUs, a short ``pretrain.py`` under ``torchrun --nproc_per_node=2`` (NCCL) on the
  embedded digits (PASS when it exits 0 with a finite loss logged for each epoch and, with TensorBoard
  installed, one writer of event files: rank 0); SKIP with fewer;
- ``smoke``: the paper's smoke chain on the device, ``DEVICE=cuda bash scripts/reproduce_paper.sh --smoke``
  (PASS when it exits 0).

It writes one report, ``<out>/report.json`` and ``<out>/report.md`` (default ``results/gpu_check``):
the device, the versions (torch, CUDA, cuDNN, driver, timm, torchvision), every figure and PASS / FAIL /
SKIP per check, and each part's output in ``<out>/<part>.log``. Exit code 0 when no check fails, 1 otherwise.

    bash scripts/gpu_check.sh                                       # on a CUDA machine (exit 2 without one)
    .venv/bin/python bench/gpu_check.py --device cpu --tiny         # the same parts on the CPU, tiny sizes
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import describe_device, versions  # noqa: E402
from core.io import atomic_write_text  # noqa: E402
from core.tracking import event_files, module_available  # noqa: E402
from gpu_report import write_report  # noqa: E402

# seconds each part may take at most (--limit PART=SECONDS), and all of them together (--budget): each part gets
# the smaller of its own limit and what the budget has left, so the smoke chain, last, gets the time the others
# left, and the whole check ends within 8 minutes
LIMITS = {"bench": 160, "agreement": 90, "ddp": 60, "smoke": 400}
BUDGET = 460
MIN_LIMIT = 10
SMOKE_COMMAND = "DEVICE={device} bash scripts/reproduce_paper.sh --smoke"
DDP_FLAGS = ["--dataset", "digits", "--num_classes", "10", "--arch", "resnet18", "--stem", "cifar", "--image_size", "32",
             "--norm", "gn_ws", "--alpha", "0.05", "--output_dim", "512", "--hidden_mlp", "2048", "--epochs", "2",
             "--warmup_epochs", "1", "-b", "128", "--lr", "2e-3", "--workers", "2", "--overwrite"]
TINY_DDP_FLAGS = ["--width", "0.125", "--output_dim", "64", "--hidden_mlp", "256", "--image_size", "16",
                  "--max_per_class", "16", "-b", "32", "--workers", "0"]


def part_limit(part: str, elapsed: float, limits: dict, budget: float) -> float:
    """Seconds ``part`` may run after ``elapsed`` seconds of the check: its own limit, or the budget's rest."""
    return min(limits[part], max(MIN_LIMIT, budget - elapsed))


def check(name: str, status: str, figures: dict | None = None, detail: str = "") -> dict:
    """One line of the report: PASS, FAIL or SKIP, its figures and a few words."""
    return {"name": name, "status": status, "figures": figures or {}, "detail": detail}


def run_part(part: str, command: list[str], out: Path, limit: float, env: dict | None = None) -> dict:
    """Run ``command`` in its own process group (killed whole at ``limit`` seconds); its output goes to
    ``<out>/<part>.log``. Returns the exit code (None on time-out), the seconds and the last output line."""
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "TQDM_DISABLE": "1", **(env or {})}, start_new_session=True)
        try:
            code = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
        log.seek(0)
        text = log.read()
    atomic_write_text(out / f"{part}.log", f"$ {shlex.join(command)}\n{text}")
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "(no output)"
    if code is None:
        last = f"timed out after {limit:.0f} s (last line: {last})"
    return {"code": code, "seconds": round(time.perf_counter() - start, 1), "last_line": last}


def failed(name: str, run: dict) -> dict:
    what = "timed out" if run["code"] is None else f"exit {run['code']}"
    return check(name, "FAIL", {"seconds": run["seconds"]}, f"{what}: {run['last_line']}")


def bench_part(args, out: Path) -> tuple[list[dict], dict | None]:
    """bench_gpu.py: one check per architecture's step ratio, the loader, DALI."""
    path = out / "bench.json"
    flags = ["--device", args.device, "--json", str(path)] + (["--tiny"] if args.tiny else [])
    run = run_part("bench", [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), *flags], out, args.part_limit)
    if run["code"] != 0 or not path.is_file():
        return [failed("bench_gpu", run)], None
    bench = json.loads(path.read_text())
    checks = []
    for arch, ratio in bench["ratios"].items():
        rates = bench["steps"][arch]
        checks.append(check(f"step {arch}", "PASS" if ratio >= bench["target"] else "FAIL",
                            {"ours_img_per_s": round(rates["ours"], 1), "bare_img_per_s": round(rates["bare"], 1),
                             "ratio": round(ratio, 3)},
                            f"our bf16 step / bare step (target >= {bench['target']}), batch {bench['batch']} at "
                            f"{bench['image_size']} px"))
    loader = {w: rate for w, rate in bench["loader"].items() if rate is not None}
    feeding = ", ".join(f"{a}: {w if w is not None else 'none'}" for a, w in bench["workers_feeding"].items())
    checks.append(check("loader", "PASS" if loader else "FAIL", {f"img_per_s_{w}_workers": round(r, 1)
                                                                 for w, r in loader.items()},
                        f"ImageFolder training pipeline; fewest workers feeding the step: {feeding}"
                        if loader else "no worker count could be measured (see bench.log)"))
    if bench["dali"] is not None:
        checks.append(check("dali", "PASS", {"img_per_s": round(bench["dali"], 1)}, "DALI decode + crop + flip"))
    elif importlib.util.find_spec("nvidia") and importlib.util.find_spec("nvidia.dali"):
        checks.append(check("dali", "FAIL", {}, "nvidia.dali imports but its pipeline failed (see bench.log)"))
    else:
        checks.append(check("dali", "SKIP", {}, "nvidia.dali is not installed (optional)"))
    return checks, bench


def smoke_part(args, out: Path) -> tuple[list[dict], dict]:
    command = args.smoke_command.format(device=args.device)
    run = run_part("smoke", ["bash", "-c", command], out, args.part_limit)
    if run["code"] != 0:
        result = failed("smoke chain", run)
        result["detail"] = f"{command}: {result['detail']}"
        return [result], run
    return [check("smoke chain", "PASS", {"seconds": run["seconds"]}, command)], run


def agreement_part(args, out: Path) -> tuple[list[dict], dict | None]:
    path = out / "agreement.json"
    devices = ["cpu", args.device]
    flags = ["--devices", *devices, "--json", str(path)] + (["--tiny", "--archs", "resnet18"] if args.tiny else [])
    run = run_part("agreement", [sys.executable, str(ROOT / "bench" / "device_agreement.py"), *flags], out,
                   args.part_limit)
    if run["code"] not in (0, 1) or not path.is_file():
        return [failed("agreement", run)], None
    result = json.loads(path.read_text())
    checks = []
    for arch, res in result["results"].items():
        layers = res["layers"].values()
        worst = max(r["feature_error"] if r["feature_error"] is not None else math.inf for r in layers)
        metric = max((r["metric_error"] for r in layers if r["metric_error"] is not None), default=0.0)
        checks.append(check(f"agreement {arch}", "PASS" if res["pass"] else "FAIL",
                            {"max_feature_diff": worst, "max_metric_rel_diff": metric,
                             "top1_agreement": res["top1_agreement"]},
                            f"{' vs '.join(result['devices'])} float32, TF32 off: max|diff|/rms <= "
                            f"{result['feature_tol']:g} per layer, NC metrics within {result['metric_tol']:g}"))
    return checks, result


def ddp_part(args, out: Path) -> tuple[list[dict], dict | None]:
    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    if args.ddp == "auto" and gpus < 2:
        return [check("ddp", "SKIP", {"gpus": gpus}, "needs 2 or more GPUs")], None
    save_dir = out / "ddp_run"
    logged = module_available("tensorboard")  # then only rank 0 may have written event files
    flags = DDP_FLAGS + (TINY_DDP_FLAGS if args.tiny else []) + ["--device", args.device, "--save_dir", str(save_dir)]
    flags += ["--logger", "tensorboard"] if logged else []
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "pretrain.py"), *flags]
    run = run_part("ddp", command, out, args.part_limit, env={"OMP_NUM_THREADS": "1"})
    log = save_dir / "model.log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    if run["code"] != 0:
        return [failed("ddp", run)], run
    finite = records and all(math.isfinite(r["loss"]) for r in records)
    writers = len(event_files(save_dir / "tensorboard" / "model")) if logged else None
    ok = finite and len(records) == 2 and writers in (None, 1)
    return [check("ddp", "PASS" if ok else "FAIL",
                  {"processes": 2, "epochs": len(records), "img_per_s": records[-1]["img_per_s"] if records else None,
                   "val_acc1": records[-1]["val_acc1"] if records else None, "tensorboard_writers": writers},
                  "torchrun --nproc_per_node=2 pretrain.py (" + ("nccl" if gpus else "gloo") + "), 2 epochs"
                  + ("; TensorBoard written by rank 0 alone" if logged else ""))], run


PARTS = {"bench": bench_part, "agreement": agreement_part, "ddp": ddp_part, "smoke": smoke_part}  # in this order


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="the device checked (cpu only for a smoke test of the check)")
    p.add_argument("--out", default=str(ROOT / "results" / "gpu_check"), help="folder of the report and logs")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--tiny", action="store_true", help="tiny sizes for every part (a test of the check on the CPU)")
    p.add_argument("--smoke_command", default=SMOKE_COMMAND, help="the smoke chain ({device} is filled in)")
    p.add_argument("--ddp", choices=("auto", "always"), default="auto",
                   help="auto: with 2 or more GPUs; always: also on fewer (on the CPU with gloo)")
    p.add_argument("--limit", nargs="*", default=[], metavar="PART=SECONDS", help="another time limit for a part")
    p.add_argument("--budget", type=float, default=BUDGET, help="seconds for all parts together")
    args = p.parse_args(argv)
    args.limits = dict(LIMITS)
    for item in args.limit:
        part, _, seconds = item.partition("=")
        if part not in LIMITS or not seconds.replace(".", "", 1).isdigit():
            p.error(f"--limit takes PART=SECONDS with PART one of {', '.join(LIMITS)}, got {item!r}")
        args.limits[part] = float(seconds)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device if ":" in args.device or args.device == "cpu" else f"{args.device}:0")
    report = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": describe_device(device),
              "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0, "versions": versions(),
              "tiny": args.tiny, "limits": args.limits, "budget": args.budget, "checks": [], "parts": {}}
    start = time.perf_counter()
    for part in [p for p in PARTS if p in args.parts]:
        args.part_limit = part_limit(part, time.perf_counter() - start, args.limits, args.budget)
        print(f"gpu_check: {part} (at most {args.part_limit:.0f} s) ...", flush=True)
        try:
            checks, raw = PARTS[part](args, out)
        except Exception as exc:  # noqa: BLE001 - reading a part's output failed: a FAIL line, the report still written
            checks, raw = [check(part, "FAIL", {}, f"reading its results failed: {type(exc).__name__}: {exc}")], None
        report["checks"] += checks
        report["parts"][part] = raw
        for c in checks:
            print(f"  {c['status']:4}  {c['name']}: {c['detail']}", flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["verdict"] = "FAIL" if any(c["status"] == "FAIL" for c in report["checks"]) else "PASS"
    paths = write_report(report, out)
    print(f"gpu_check: {report['verdict']} ({sum(c['status'] == 'PASS' for c in report['checks'])} passed, "
          f"{sum(c['status'] == 'FAIL' for c in report['checks'])} failed, "
          f"{sum(c['status'] == 'SKIP' for c in report['checks'])} skipped) in {report['seconds']:.0f} s; "
          f"report: {paths[0]} and {paths[1]}", flush=True)
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
