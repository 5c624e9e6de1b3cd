"""What pretraining costs beyond its compute, at the demo's settings, measured in one run.

Per round (rounds alternate, so load from other processes hits every side alike; medians reported):

- bare: the demo's model, optimizer and loss stepped over the epoch's batches already in memory
  (real Fashion-MNIST images, transformed once beforehand), then a no-grad forward over the
  validation batches, likewise in memory. This is the compute a training epoch cannot avoid.
- step: ``train.loop.train_one_epoch`` over the same in-memory batches (device moves,
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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import pretrain  # noqa: E402
from core import distributed as D  # noqa: E402
from core.config import parse_config  # noqa: E402
from train.loop import train_one_epoch  # noqa: E402
from train.options import PRETRAIN_ALIASES, PRETRAIN_DEFAULTS, PRETRAIN_TYPES  # noqa: E402
from train.recipes import build_optimizer  # noqa: E402
from common import bare_step, describe_device, load_average, synchronize  # noqa: E402
from train.run import (build_pretrain_data, build_pretrain_model, loss_function, make_loaders,  # noqa: E402
                       seed_everything, uses_channels_last)

TARGET = 1.15
# scripts/demo.sh's pretraining flags (its defaults; tests/test_bench.py keeps the two in step)
DEMO_FLAGS = ["--config", str(ROOT / "configs" / "embedded_cpu.yaml"), "--seed", "0", "--epochs", "20",
              "--image_size", "32", "--max_per_class", "250"]
DEMO_NC_FLAGS = ["--alpha", "0.05", "--output_dim", "128", "--hidden_mlp", "512"]
SMOKE_FLAGS = ["--max_per_class", "24", "--image_size", "16", "--width", "0.125", "-b", "32"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=("baseline", "ours"), default="baseline",
                   help="the demo's baseline (less compute per image, so the pipeline weighs more) or its NC run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help="tiny settings and one round: checks the benchmark runs")
    p.add_argument("--compile", action="store_true",
                   help="also time the bare epoch of torch.compile(model): its first (compiling) epoch and the next ones")
    args = p.parse_args(argv)
    args.flags = DEMO_FLAGS + (DEMO_NC_FLAGS if args.variant == "ours" else []) + ["--device", args.device]
    if args.smoke:
        args.flags, args.rounds = args.flags + SMOKE_FLAGS, 1
    return args


class EpochBench:
    """The demo's run set up once (model, optimizer, loss, one epoch's batches in memory) and the
    three ways of running an epoch, each appending its seconds to ``times``."""

    def __init__(self, flags: list[str]) -> None:
        self.flags = flags
        cfg = self.cfg = parse_config(PRETRAIN_DEFAULTS, flags, aliases=PRETRAIN_ALIASES, types=PRETRAIN_TYPES)
        info = D.init_distributed(cfg.device)
        self.device = info.device
        seed_everything(cfg.seed)
        train_set, val_set = build_pretrain_data(cfg)
        self.channels_last = uses_channels_last(cfg, self.device)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = build_pretrain_model(cfg).to(self.device, memory_format=self.memory_format)
        self.optimizer = build_optimizer(self.model, cfg)
        self.loss_fn = loss_function(cfg, self.model)
        train_loader, val_loader = make_loaders(cfg, train_set, val_set, info, 0)
        self.train_batches, self.val_batches = list(train_loader), list(val_loader)
        self.n_train = sum(len(y) for _, y in self.train_batches)
        self.n_val = sum(len(y) for _, y in self.val_batches)
        self.amp = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        self.times: dict[str, list[float]] = {}

    def _add(self, key: str, seconds: float) -> None:
        self.times.setdefault(key, []).append(seconds)

    def bare(self, net=None, key: str = "bare") -> None:
        net = net or self.model
        start = time.perf_counter()
        self.model.train()
        for x, y in self.train_batches:
            x, y = x.to(self.device).contiguous(memory_format=self.memory_format), y.to(self.device)
            bare_step(net, x, y, self.loss_fn, self.optimizer, self.amp)
        synchronize(self.device)
        mid = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            for x, _ in self.val_batches:
                with torch.autocast(**self.amp):
                    net(x.to(self.device).contiguous(memory_format=self.memory_format))
        synchronize(self.device)
        self._add(f"{key} train", mid - start)
        self._add(f"{key} validation", time.perf_counter() - mid)

    def step(self) -> None:
        start = time.perf_counter()
        train_one_epoch(self.model, self.train_batches, self.optimizer, self.loss_fn, self.device,
                        channels_last=self.channels_last, desc="step")
        synchronize(self.device)
        self._add("step", time.perf_counter() - start)

    def epoch(self) -> None:
        with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            pretrain.main(self.flags + ["--epochs", "1", "--save_dir", folder])
            self._add("epoch", time.perf_counter() - start)
            record = json.loads((Path(folder) / "model.log.jsonl").read_text().splitlines()[0])
        self._add("epoch train pass", record["seconds"])

    def describe(self, variant: str, rounds: int) -> str:
        cfg = self.cfg
        return (f"the demo's {variant} run: {cfg.arch} width {cfg.width} ({cfg.stem} stem, {cfg.norm}) at "
                f"{cfg.image_size} px on {cfg.dataset} ({cfg.num_classes} classes x {cfg.max_per_class}), batch "
                f"{cfg.batch_size}, {cfg.workers} loader workers: {len(self.train_batches)} steps ({self.n_train} "
                f"images) + {self.n_val} validation images per epoch; {rounds} rounds after a warm-up, medians")


def report_compile(bench: EpochBench, rounds: int, bare_epoch: float) -> None:
    """torch.compile's bare epochs: the first (compiling) and the later ones, against eager."""
    compiled = torch.compile(bench.model)
    bench.bare(compiled, "compiling")
    for _ in range(rounds):
        bench.bare(compiled, "compiled")
    times, epochs, n = bench.times, bench.cfg.epochs, bench.n_train + bench.n_val
    first = times["compiling train"][0] + times["compiling validation"][0]
    steady = statistics.median(times["compiled train"]) + statistics.median(times["compiled validation"])
    print(f"{'bare epoch, torch.compile: the first (compiling)':50}{first:9.2f}")
    print(f"{'bare epoch, torch.compile: later epochs':50}{steady:9.2f}{n / steady:9.0f}")
    print(f"torch.compile: {steady / bare_epoch:.2f} of an eager bare epoch; {epochs} epochs (the demo's) take "
          f"{first + (epochs - 1) * steady:.0f} s compiled vs {epochs * bare_epoch:.0f} s eager")


def main(argv=None) -> None:
    args = parse_args(argv)
    bench = EpochBench(args.flags)
    print(f"device {describe_device(bench.device)}; load average {load_average()} (1, 5, 15 min)")
    print(bench.describe(args.variant, args.rounds))
    for fn in (bench.bare, bench.step, bench.epoch):  # warm-up
        fn()
    bench.times.clear()
    for _ in range(args.rounds):
        for fn in (bench.bare, bench.step, bench.epoch):
            fn()
    med = {k: statistics.median(v) for k, v in bench.times.items()}
    rows = [("bare training steps (batches in memory)", med["bare train"], bench.n_train),
            ("bare validation forward (batches in memory)", med["bare validation"], bench.n_val),
            ("train_one_epoch on the same batches", med["step"], bench.n_train),
            ("pretrain.py: its log's training pass", med["epoch train pass"], bench.n_train),
            ("pretrain.py: one epoch, wall clock (all of it)", med["epoch"], None)]
    print(f"{'per epoch on ' + bench.device.type:50}{'seconds':>9}{'img/s':>9}")
    for name, seconds, images in rows:
        print(f"{name:50}{seconds:9.2f}" + (f"{images / seconds:9.0f}" if images else ""))
    bare_epoch = med["bare train"] + med["bare validation"]
    ratio = med["epoch"] / bare_epoch
    if args.compile:
        report_compile(bench, args.rounds, bare_epoch)
    print(f"ratio training pass/bare training steps = {med['epoch train pass'] / med['bare train']:.2f}")
    print(f"load average after {load_average()}; target epoch/bare <= {TARGET}: {'PASS' if ratio <= TARGET else 'MISS'}")
    print(f"ratio step/bare = {med['step'] / med['bare train']:.2f}")
    print(f"ratio epoch/bare = {ratio:.2f}")


if __name__ == "__main__":
    main()
