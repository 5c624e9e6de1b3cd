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
  the page cache, so the figure is the decode + augmentation rate, not the disk's. A worker count
  whose batches in flight would not fit in ``/dev/shm`` (small in many containers) is left out with a
  line saying so, and a loader that fails is a line, not the end of the run;
- when ``nvidia.dali`` is importable (optional, never a dependency): NVIDIA DALI's pipeline on the same
  files, JPEG decode on the GPU (nvJPEG, ``device='mixed'``) + random-resized crop + flip + normalize,
  as one more img/s line.

One table; every line names the device it measured. The last lines give the step ratio
(our img/s / bare img/s, target >= 0.9) and the fewest workers that feed each model. ``--json PATH``
also writes every row, the ratios and the verdict as JSON (``scripts/gpu_check.sh`` reads it).

    .venv/bin/python bench/bench_gpu.py                        # on a CUDA machine, a few minutes
    .venv/bin/python bench/bench_gpu.py --compile              # plus torch.compile
    .venv/bin/python bench/bench_gpu.py --device cpu --tiny    # smoke test in seconds (32 px, batch 8)
    .venv/bin/python bench/bench_gpu.py --json results/bench_gpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import bare_step, describe_device, load_average, synchronize, versions  # noqa: E402
from core import distributed as D  # noqa: E402
from core.config import parse_config  # noqa: E402
from core.io import atomic_write_text  # noqa: E402
from data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
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
    """The printed table; ``rows`` keeps every row for ``--json``."""

    def __init__(self, batch: int):
        self.batch, self.rows = batch, []
        print(f"{'device':44} {'measured':52} {'img/s':>9} {'ms/batch':>9}  note", flush=True)

    def row(self, device: str, what: str, img_per_s: float, note: str = "") -> None:
        ms = 1e3 * self.batch / img_per_s if img_per_s > 0 else float("inf")
        self.rows.append({"device": device, "measured": what, "img_per_s": round(img_per_s, 1),
                          "ms_per_batch": round(ms, 2), "note": note})
        print(f"{device:44} {what:52} {img_per_s:9.1f} {ms:9.1f}  {note}", flush=True)


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


def shm_bytes() -> int | None:
    """Free bytes in ``/dev/shm``, where DataLoader workers hand their batches over (None: unknown)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def loader_fits(args, workers: int) -> str:
    """Why ``workers`` workers' batches in flight (2 per worker, float32) would overflow /dev/shm, or ""."""
    free = shm_bytes()
    need = 2 * workers * args.batch * 3 * args.image_size ** 2 * 4
    if free is None or need <= 0.8 * free:
        return ""
    return (f"left out: {workers} workers hold about {need / 2**30:.1f} GiB of batches in /dev/shm, which has "
            f"{free / 2**30:.1f} GiB free (raise it, e.g. docker --shm-size)")


def measure_loader(args, info: D.DistInfo, folder: Path, workers: int, table: Table, cpu_name: str) -> float | None:
    """Images per second of pretrain's training DataLoader on the JPEG folder, ``workers`` workers
    (None, with a line saying why, when it cannot run)."""
    what = f"ImageFolder loader, {workers} worker{'s' if workers > 1 else ''}"
    reason = loader_fits(args, workers)
    if reason:
        print(f"{cpu_name:44} {what:52} {reason}", flush=True)
        return None
    cfg = config("resnet18", args, data=folder, workers=workers)
    train_set, val_set = build_pretrain_data(cfg)
    batches = workers + max(8, 2 * workers) if not args.tiny else workers + 2
    repeats = -(-batches * args.batch // len(train_set))
    # the files read repeatedly: a Subset of the dataset (what make_loaders reads), each index `repeats` times
    loader, _ = make_loaders(cfg, Subset(train_set, list(range(len(train_set))) * repeats), val_set, info, 0)
    iterator = iter(loader)
    try:
        for _ in range(workers):  # every worker's first batch: start-up, not throughput
            next(iterator)
        start, seen = time.perf_counter(), 0
        for _ in range(batches - workers):
            seen += len(next(iterator)[1])
    except RuntimeError as exc:  # a worker killed (out of shared memory, ...): a line, the run goes on
        print(f"{cpu_name:44} {what:52} failed: {str(exc).strip().splitlines()[0]}", flush=True)
        return None
    finally:
        del iterator
    rate = seen / (time.perf_counter() - start)
    table.row(cpu_name, what, rate,
              f"{args.image_size} px training transform, {args.jpeg_size[0]} x {args.jpeg_size[1]} JPEG")
    return rate


def measure_dali(args, device: torch.device, folder: Path, table: Table, name: str) -> float | None:
    """Images per second of an NVIDIA DALI pipeline on the JPEG folder: file reader, JPEG decode on the
    GPU (nvJPEG, ``device='mixed'``; on the CPU without CUDA), random-resized crop, flip, normalize
    to float32 CHW, as the ImageFolder loader's training transform. None (and a line) when
    ``nvidia.dali`` is not importable or its pipeline fails: DALI is optional."""
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError:
        print(f"{name}: DALI line left out: nvidia.dali is not importable (optional: pip install "
              f"nvidia-dali-cuda{(torch.version.cuda or '12').split('.')[0]}0)", flush=True)
        return None
    cuda = device.type == "cuda"
    threads = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4, 16)

    @pipeline_def(batch_size=args.batch, num_threads=threads, device_id=(device.index or 0) if cuda else None, seed=0)
    def pipeline():
        jpegs, labels = fn.readers.file(file_root=str(folder / "train"), random_shuffle=True, name="reader")
        images = fn.decoders.image(jpegs, device="mixed" if cuda else "cpu", output_type=types.RGB)
        images = fn.random_resized_crop(images, size=[args.image_size, args.image_size])
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                          mean=[255 * m for m in IMAGENET_MEAN], std=[255 * s for s in IMAGENET_STD],
                                          mirror=fn.random.coin_flip())
        return images, labels

    try:
        pipe = pipeline()
        pipe.build()
        for _ in range(2):  # start-up
            pipe.run()
        synchronize(device)
        batches = 3 if args.tiny else 20
        start = time.perf_counter()
        for _ in range(batches):
            pipe.run()
        synchronize(device)
        rate = batches * args.batch / (time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - an optional library's failure is a line, not the end of the run
        print(f"{name}: DALI line left out: its pipeline failed: {str(exc).strip().splitlines()[0]}", flush=True)
        return None
    table.row(name, f"DALI {'GPU (nvJPEG)' if cuda else 'CPU'} decode + crop + flip, {threads} threads", rate,
              f"{args.image_size} px, {args.jpeg_size[0]} x {args.jpeg_size[1]} JPEG")
    return rate


def parse_args(argv=None) -> argparse.Namespace:
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
    p.add_argument("--json", help="also write the rows, ratios and verdict to this JSON file")
    args = p.parse_args(argv)
    args.cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.tiny:
        args.image_size, args.batch, args.steps, args.rounds, args.warmup, args.images = 32, 8, 2, 1, 1, 40
        args.jpeg_size = (64, 48)
        args.workers = args.workers or [1, 2]
    else:
        args.jpeg_size = (500, 375)  # about the mean ImageNet image
        args.workers = args.workers or [2 ** k for k in range(args.cpus.bit_length()) if 2 ** k <= args.cpus]
    return args


def summarize(name: str, steps: dict, loader: dict, dali: float | None) -> dict:
    """The closing lines (which worker count feeds each model; the step ratio and its verdict) and
    the same as a dict."""
    ratios = {arch: r["ours"] / r["bare"] for arch, r in steps.items()}
    feeding = {}
    for arch, r in steps.items():
        enough = [w for w, rate in loader.items() if rate is not None and rate >= r["ours"]]
        feeding[arch] = enough[0] if enough else None
        measured = {w: rate for w, rate in loader.items() if rate is not None}
        best = max(measured, key=measured.get) if measured else None
        print(f"{name}: {arch} step {r['ours']:.0f} img/s; " + (
            f"{enough[0]} loader workers feed it ({loader[enough[0]]:.0f} img/s)" if enough else
            f"no measured worker count feeds it (best {measured[best]:.0f} img/s at {best})" if measured else
            "no loader row was measured") + (f"; DALI {dali:.0f} img/s" if dali else ""))
        if "compiled" in r:
            print(f"{name}: {arch} torch.compile / eager bare step = {r['compiled'] / r['bare']:.2f}")
    verdict = "PASS" if min(ratios.values()) >= TARGET else "MISS"
    print(f"{name}: ratio our step/bare step = " + ", ".join(f"{a} {v:.2f}" for a, v in ratios.items())
          + f" (target >= {TARGET}: {verdict})")
    return {"ratios": ratios, "target": TARGET, "verdict": verdict, "workers_feeding": feeding}


def main(argv=None) -> dict:
    args = parse_args(argv)
    info = D.init_distributed(args.device)
    name = describe_device(info.device)
    cpu_name = f"cpu ({describe_device(torch.device('cpu')).split('(', 1)[1].split(',')[0]}, {args.cpus} CPUs)"
    print(f"load average {load_average()} (1, 5, 15 min); torch {torch.__version__}; batch {args.batch} at "
          f"{args.image_size} px; best of {args.rounds} rounds of {args.steps} steps", flush=True)
    table = Table(args.batch)
    steps = {arch: measure_steps(arch, args, info, table, name) for arch in args.archs}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        write_jpegs(Path(tmp), max(1, args.images // NUM_CLASSES), args.jpeg_size)
        loader = {w: measure_loader(args, info, Path(tmp), w, table, cpu_name) for w in args.workers}
        dali = measure_dali(args, info.device, Path(tmp), table, name)
    print(f"load average after {load_average()}")
    result = {"device": name, "versions": versions(), "batch": args.batch, "image_size": args.image_size,
              "rows": table.rows, "steps": steps, "loader": {str(w): r for w, r in loader.items()},
              "dali": dali, **summarize(name, steps, loader, dali)}
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
