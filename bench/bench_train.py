"""What pretraining costs beyond its compute, at the demo's settings, measured in one run.

Per round (rounds alternate, so load from other processes hits every side alike; medians reported):

- bare: the demo's model, optimizer and loss stepped over the epoch's batches already in memory
  (real Fashion-MNIST images, transformed once beforehand), then a no-grad forward over the
  validation batches, likewise in memory. This is the compute a training epoch cannot avoid.
- step: ``engine.trainer.train_one_epoch`` over the same in-memory batches (device moves,
  autocast context, loss sums, non-finite check, progress bar).
- epoch: ``pretrain.main`` with the demo's flags for one epoch, into a fresh folder: config,
  dataset and transforms, DataLoader, ``train_one_epoch``, validation, both checkpoints, the
  log and its printed line; the model and run set-up count too. Its log's ``seconds`` (the
  training pass alone, what ``img_per_s`` is computed from) is shown beside it.

The last two lines are ``ratio step/bare`` (step / bare training steps) and ``ratio epoch/bare``
(pretrain.py's wall clock for one epoch / bare training steps + bare validation; target <= 1.15).

    .venv/bin/python bench/bench_train.py [--variant baseline|ours] [--rounds 3]
    .venv/bin/python bench/bench_train.py --smoke     # the same code on a tiny model and subset, in seconds
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import pretrain  # noqa: E402
from engine import distributed as D  # noqa: E402
from engine.config import parse_config  # noqa: E402
from engine.trainer import (PRETRAIN_ALIASES, PRETRAIN_DEFAULTS, PRETRAIN_TYPES, _loaders, build_loss_fn,  # noqa: E402
                            build_optimizer, build_pretrain_data, build_pretrain_model, epoch_seed, seed_everything,
                            train_one_epoch)

TARGET = 1.15
# scripts/demo.sh's pretraining flags (its defaults; tests/test_bench.py keeps the two in step)
DEMO_FLAGS = ["--config", str(ROOT / "configs" / "embedded_cpu.yaml"), "--seed", "0", "--epochs", "20",
              "--image_size", "32", "--max_per_class", "250"]
DEMO_NC_FLAGS = ["--alpha", "0.05", "--output_dim", "128", "--hidden_mlp", "512"]
SMOKE_FLAGS = ["--max_per_class", "24", "--image_size", "16", "--width", "0.125", "-b", "32"]


def bare_step(net, x, y, loss_fn, optimizer, amp: dict) -> None:
    """One training step with nothing around it: autocast forward, loss, backward, optimizer step."""
    with torch.autocast(**amp):
        out = net(x, return_all=True)
    loss, _, _ = loss_fn(out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA), so a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    """``lscpu``'s model name (else the platform's processor string)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} torch threads)"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=("baseline", "ours"), default="baseline",
                   help="the demo's baseline (less compute per image, so the pipeline weighs more) or its NC run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help="tiny settings and one round: checks the benchmark runs")
    p.add_argument("--compile", action="store_true",
                   help="also time the bare epoch of torch.compile(model): its first (compiling) epoch and the next ones")
    args = p.parse_args(argv)

    flags = DEMO_FLAGS + (DEMO_NC_FLAGS if args.variant == "ours" else []) + ["--device", args.device]
    if args.smoke:
        flags, args.rounds = flags + SMOKE_FLAGS, 1
    cfg = parse_config(PRETRAIN_DEFAULTS, flags, aliases=PRETRAIN_ALIASES, types=PRETRAIN_TYPES)
    info = D.init_distributed(cfg.device)
    device = info.device
    seed_everything(cfg.seed)
    train_set, val_set = build_pretrain_data(cfg)
    model = build_pretrain_model(cfg)
    channels_last = device.type == "cuda" and not cfg.arch.startswith("vit")
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = build_optimizer(model, cfg)
    loss_fn = build_loss_fn(cfg, model)
    train_loader, val_loader = _loaders(cfg, train_set, val_set, info, 0)
    train_batches, val_batches = list(train_loader), list(val_loader)
    n_train, n_val = sum(len(y) for _, y in train_batches), sum(len(y) for _, y in val_batches)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def sync():
        synchronize(device)

    def bare(net=model, key="bare") -> None:
        start = time.perf_counter()
        model.train()
        for x, y in train_batches:
            x, y = x.to(device).contiguous(memory_format=memory_format), y.to(device)
            bare_step(net, x, y, loss_fn, optimizer, amp)
        sync()
        mid = time.perf_counter()
        model.eval()
        with torch.no_grad():
            for x, _ in val_batches:
                with torch.autocast(**amp):
                    net(x.to(device).contiguous(memory_format=memory_format))
        sync()
        times.setdefault(f"{key} train", []).append(mid - start)
        times.setdefault(f"{key} validation", []).append(time.perf_counter() - mid)

    def step() -> None:
        start = time.perf_counter()
        train_one_epoch(model, train_batches, optimizer, loss_fn, device, channels_last=channels_last, desc="step")
        sync()
        times["step"].append(time.perf_counter() - start)

    def epoch() -> None:
        with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            pretrain.main(flags + ["--epochs", "1", "--save_dir", folder])
            times["epoch"].append(time.perf_counter() - start)
            record = json.loads((Path(folder) / "model.log.jsonl").read_text().splitlines()[0])
        times["epoch train pass"].append(record["seconds"])

    print(f"device {describe_device(device)}; load average {load_average()} (1, 5, 15 min)")
    print(f"the demo's {args.variant} run: {cfg.arch} width {cfg.width} ({cfg.stem} stem, {cfg.norm}) at "
          f"{cfg.image_size} px on {cfg.dataset} ({cfg.num_classes} classes x {cfg.max_per_class}), batch "
          f"{cfg.batch_size}, {cfg.workers} loader workers: {len(train_batches)} steps ({n_train} images) + "
          f"{n_val} validation images per epoch; {args.rounds} rounds after a warm-up, medians")
    times: dict[str, list[float]] = {k: [] for k in ("bare train", "bare validation", "step", "epoch", "epoch train pass")}
    for fn in (bare, step, epoch):  # warm-up
        fn()
    times = {k: [] for k in times}
    for _ in range(args.rounds):
        for fn in (bare, step, epoch):
            fn()
    med = {k: statistics.median(v) for k, v in times.items() if v}
    rows = [("bare training steps (batches in memory)", med["bare train"], n_train),
            ("bare validation forward (batches in memory)", med["bare validation"], n_val),
            ("train_one_epoch on the same batches", med["step"], n_train),
            ("pretrain.py: its log's training pass", med["epoch train pass"], n_train),
            ("pretrain.py: one epoch, wall clock (all of it)", med["epoch"], None)]
    print(f"{'per epoch on ' + device.type:50}{'seconds':>9}{'img/s':>9}")
    for name, seconds, images in rows:
        print(f"{name:50}{seconds:9.2f}" + (f"{images / seconds:9.0f}" if images else ""))
    bare_epoch = med["bare train"] + med["bare validation"]
    ratio = med["epoch"] / bare_epoch
    if args.compile:
        compiled = torch.compile(model)
        bare(compiled, "compiling")
        for _ in range(args.rounds):
            bare(compiled, "compiled")
        first = times["compiling train"][0] + times["compiling validation"][0]
        steady = statistics.median(times["compiled train"]) + statistics.median(times["compiled validation"])
        print(f"{'bare epoch, torch.compile: the first (compiling)':50}{first:9.2f}")
        print(f"{'bare epoch, torch.compile: later epochs':50}{steady:9.2f}{(n_train + n_val) / steady:9.0f}")
        print(f"torch.compile: {steady / bare_epoch:.2f} of an eager bare epoch; {cfg.epochs} epochs (the demo's) take "
              f"{first + (cfg.epochs - 1) * steady:.0f} s compiled vs {cfg.epochs * bare_epoch:.0f} s eager")
    print(f"ratio training pass/bare training steps = {med['epoch train pass'] / med['bare train']:.2f}")
    print(f"load average after {load_average()}; target epoch/bare <= {TARGET}: {'PASS' if ratio <= TARGET else 'MISS'}")
    print(f"ratio step/bare = {med['step'] / med['bare train']:.2f}")
    print(f"ratio epoch/bare = {ratio:.2f}")


if __name__ == "__main__":
    main()
