"""The GPU path, measured in one run: our training step against a bare one, and how many loader
workers keep it fed.

For ResNet-18 and ViT-T at 224 px, batch 256 (the NC-controlled recipes of configs/paper/*_nc.yaml;
bf16 autocast on CUDA, channels_last for the CNN, as pretrain.py runs them):

- bare step: forward, loss, backward and AdamW step on a batch already on the device;
- our step: ``train.loop.train_one_epoch`` on batches as the DataLoader hands them over
  (pinned host memory on CUDA), so the host-to-device copy counts; that copy alone is a line too;
- with ``--compile``: the bare step of ``torch.compile(model)`` (compile time shown apart);
- the ImageFolder pipeline (``pretrain.py``'s dataset, training transform and DataLoader from
  ``train.run.make_loaders``) on JPEG files this script writes into a temporary folder, in
  images per second at 1, 2, 4, ... workers, against the steps' img/s. Files are read back from
  the page cache, so the figure is the decode + augmentation rate, not the disk's.

One table; every line names the device it measured. The last lines give the step ratio
(our img/s / bare img/s, target >= 0.9) and the fewest workers that feed each model.

    .venv/bin/python bench/bench_gpu.py                        # on a CUDA machine, a few minutes
    .venv/bin/python bench/bench_gpu.py --compile              # plus torch.compile
    .venv/bin/python bench/bench_gpu.py --device cpu --tiny    # smoke test in seconds (32 px, batch 8)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import bare_step, describe_device, load_average, synchronize  # noqa: E402
from core import distributed as D  # noqa: E402
from core.config import parse_config  # noqa: E402
from train.loop import train_one_epoch  # noqa: E402
from train.options import PRETRAIN_ALIASES, PRETRAIN_DEFAULTS, PRETRAIN_TYPES  # noqa: E402
from train.recipes import build_optimizer  # noqa: E402
from train.run import build_pretrain_data, build_pretrain_model, loss_function, make_loaders, uses_channels_last  # noqa: E402

TARGET = 0.9
# the NC-controlled recipes of the paper (configs/paper/<arch>_nc.yaml), on 10 classes of JPEG files
MODELS = {arch: str(ROOT / "configs" / "paper" / f"{arch}_nc.yaml") for arch in ("resnet18", "vit_tiny")}
NUM_CLASSES = 10


def write_jpegs(folder: Path, per_class: int, size: tuple[int, int], seed: int = 0) -> None:
    """``folder/{train,val}/class_k/*.jpg``: smooth random colour images (low-resolution noise
    upsampled, plus fine noise), which compress and decode like photographs more than white noise does."""
    rng = np.random.default_rng(seed)
    width, height = size
    for split, count in (("train", per_class), ("val", 1)):
        for label in range(NUM_CLASSES):
            target = folder / split / f"class_{label}"
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                coarse = Image.fromarray(rng.integers(0, 256, (height // 24 + 2, width // 24 + 2, 3), dtype=np.uint8))
                image = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
                image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
                Image.fromarray(image).save(target / f"{i:05d}.jpg", quality=90)


def config(arch: str, args, **extra) -> argparse.Namespace:
    flags = ["--config", MODELS[arch], "--image_size", str(args.image_size), "-b", str(args.batch), "--num_classes",
                            str(NUM_CLASSES), "--device", args.device, "--dataset", "imagefolder", "--augmentation"]
    for key, value in extra.items():
        flags += [f"--{key}", str(value)]
    return parse_config(PRETRAIN_DEFAULTS, flags, aliases=PRETRAIN_ALIASES, types=PRETRAIN_TYPES)


class Table:
    def __init__(self):
        print(f"{'device':44} {'measured':52} {'img/s':>9} {'ms/batch':>9}  note", flush=True)

    def row(self, device: str, what: str, img_per_s: float, note: str = "") -> None:
        print(f"{device:44} {what:52} {img_per_s:9.1f} {1e3 * self.batch / img_per_s:9.1f}  {note}", flush=True)


def time_steps(fn, steps: int, sync) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls (after the caller's warm-up)."""
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def measure_steps(arch: str, args, info: D.DistInfo, table: Table, name: str) -> dict[str, float]:
    cfg = config(arch, args)
    device = info.device
    torch.manual_seed(0)
    model = build_pretrain_model(cfg)
    channels_last = uses_channels_last(cfg, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(model, cfg)
    loss_fn = loss_function(cfg, model)
    shape = (args.batch, 3, args.image_size, args.image_size)
    host = torch.randn(shape, pin_memory=device.type == "cuda")
    labels = torch.randint(0, NUM_CLASSES, (args.batch,))
    x = host.to(device).contiguous(memory_format=memory_format)
    y = labels.to(device)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def sync():
        synchronize(device)

    def bare(net=model):
        bare_step(net, x, y, loss_fn, optimizer, amp)

    def ours_epoch(steps):
        train_one_epoch(model, [(host, labels)] * steps, optimizer, loss_fn, device, channels_last=channels_last,
                        desc=f"{arch} step", show_progress=False)

    model.train()
    for _ in range(args.warmup):
        bare()
    ours_epoch(args.warmup)
    rates = {}
    # alternate the two measurements so that drifting load or clocks hit both alike
    bare_times, ours_times = [], []
    for _ in range(args.rounds):
        bare_times.append(time_steps(bare, args.steps, sync))
        ours_times.append(time_steps(lambda: ours_epoch(args.steps), 1, sync) / args.steps)
    rates["bare"] = args.batch / min(bare_times)
    rates["ours"] = args.batch / min(ours_times)
    copy = time_steps(lambda: host.to(device, non_blocking=True), args.steps, sync) if device.type == "cuda" else 0.0
    amp_note = "bf16 autocast" + (", channels_last" if channels_last else "") if device.type == "cuda" else "float32"
    table.row(name, f"{arch} bare step (batch on the device)", rates["bare"], amp_note)
    table.row(name, f"{arch} our step (train_one_epoch, host batches)", rates["ours"],
              f"{rates['ours'] / rates['bare']:.2f} of bare")
    if device.type == "cuda":
        table.row(name, f"{arch} host-to-device copy of a batch", args.batch / copy, "pinned memory, float32")
    if args.compile:
        compiled = torch.compile(model)
        start = time.perf_counter()
        for _ in range(max(2, args.warmup)):
            bare(compiled)
        sync()
        compile_seconds = time.perf_counter() - start
        rates["compiled"] = args.batch / min(time_steps(lambda: bare(compiled), args.steps, sync)
                                             for _ in range(args.rounds))
        table.row(name, f"{arch} bare step, torch.compile", rates["compiled"],
                  f"{rates['compiled'] / rates['bare']:.2f} of eager; first steps {compile_seconds:.0f} s")
    return rates


def measure_loader(args, info: D.DistInfo, folder: Path, workers: int, table: Table, cpu_name: str) -> float:
    """Images per second of pretrain's training DataLoader on the JPEG folder, ``workers`` workers."""
    cfg = config("resnet18", args, data=folder, workers=workers)
    train_set, val_set = build_pretrain_data(cfg)
    batches = workers + max(8, 2 * workers) if not args.tiny else workers + 2
    repeats = -(-batches * args.batch // len(train_set))
    loader, _ = make_loaders(cfg, ConcatDataset([train_set] * repeats), val_set, info, 0)
    iterator = iter(loader)
    for _ in range(workers):  # every worker's first batch: start-up, not throughput
        next(iterator)
    start, seen = time.perf_counter(), 0
    for _ in range(batches - workers):
        seen += len(next(iterator)[1])
    rate = seen / (time.perf_counter() - start)
    del iterator
    table.row(cpu_name, f"ImageFolder loader, {workers} worker{'s' if workers > 1 else ''}", rate,
              f"{args.image_size} px training transform, {args.jpeg_size[0]} x {args.jpeg_size[1]} JPEG")
    return rate


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="a smoke test in seconds: 32 px, batch 8, few steps and files")
    p.add_argument("--archs", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="the best round counts")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", help="loader worker counts (default 1, 2, 4, ... up to the CPUs)")
    p.add_argument("--images", type=int, default=1024, help="distinct JPEG files written (read repeatedly)")
    p.add_argument("--compile", action="store_true", help="also time the bare step of torch.compile(model)")
    args = p.parse_args(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.tiny:
        args.image_size, args.batch, args.steps, args.rounds, args.warmup, args.images = 32, 8, 2, 1, 1, 40
        args.jpeg_size = (64, 48)
        args.workers = args.workers or [1, 2]
    else:
        args.jpeg_size = (500, 375)  # about the mean ImageNet image
        args.workers = args.workers or [2 ** k for k in range(cpus.bit_length()) if 2 ** k <= cpus]

    info = D.init_distributed(args.device)
    name = describe_device(info.device)
    cpu_name = f"cpu ({describe_device(torch.device('cpu')).split('(', 1)[1].split(',')[0]}, {cpus} CPUs)"
    print(f"load average {load_average()} (1, 5, 15 min); torch {torch.__version__}; batch {args.batch} at "
          f"{args.image_size} px; best of {args.rounds} rounds of {args.steps} steps", flush=True)
    table = Table()
    table.batch = args.batch
    steps = {arch: measure_steps(arch, args, info, table, name) for arch in args.archs}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        write_jpegs(Path(tmp), max(1, args.images // NUM_CLASSES), args.jpeg_size)
        loader = {w: measure_loader(args, info, Path(tmp), w, table, cpu_name) for w in args.workers}
    ratios = {arch: r["ours"] / r["bare"] for arch, r in steps.items()}
    print(f"load average after {load_average()}")
    for arch, r in steps.items():
        enough = [w for w, rate in loader.items() if rate >= r["ours"]]
        print(f"{name}: {arch} step {r['ours']:.0f} img/s; " + (
            f"{enough[0]} loader workers feed it ({loader[enough[0]]:.0f} img/s)" if enough else
            f"no measured worker count feeds it (best {max(loader.values()):.0f} img/s at {max(loader, key=loader.get)})"))
        if "compiled" in r:
            print(f"{name}: {arch} torch.compile / eager bare step = {r['compiled'] / r['bare']:.2f}")
    verdict = "PASS" if min(ratios.values()) >= TARGET else "MISS"
    print(f"{name}: ratio our step/bare step = " + ", ".join(f"{a} {v:.2f}" for a, v in ratios.items())
          + f" (target >= {TARGET}: {verdict})")


if __name__ == "__main__":
    main()
