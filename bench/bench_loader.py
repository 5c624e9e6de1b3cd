"""The JPEG training pipeline: images per CPU-core-second of the official code's pipeline and of ours.

Images: scikit-image's bundled colour photographs (astronaut, chelsea, coffee, rocket,
hubble_deep_field, immunohistochemistry, retina), centre-cropped and resized to ImageNet's usual
sizes (500 x 375, 375 x 500, 500 x 333, 333 x 500) and saved as JPEG at quality 75-95 with 4:2:0
chroma subsampling, as most ImageNet files are, one class folder per photograph.

Pipelines, each the 224-px training transform (RandomResizedCrop with scale 0.08-1 and ratio
3/4-4/3, horizontal flip with p = 0.5, to a normalized float tensor):

- official: the official code's, torchvision's ``ImageFolder`` (PIL open + ``convert("RGB")``),
  then the classic (v1) ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize``, one image at a time;
- pil decode: ours with ``--no-fast_decode`` as it feeds a GPU: ``build_dataset("imagefolder", ...)``
  read through ``EpochSamples(..., uint8=True)`` in batches of 32 (keyed draws, PIL decode, torch
  resize, uint8 out: ``pretrain.py`` normalizes the batches on the GPU);
- fast decode: the same with ``--fast_decode`` (the default): libjpeg-turbo through simplejpeg,
  at a reduced DCT scale where the crop allows it.

Rows for information: ours with the normalization in the loader (as ``pretrain.py`` runs on the
CPU), and four JPEG decoders alone (PIL, simplejpeg as ours calls it, simplejpeg with
libjpeg-turbo's fast IDCT and upsampling, ``torchvision.io.decode_jpeg``).

Each measurement runs in its own process with one thread and reports images / CPU seconds of that
process (``time.process_time``) after a warm-up; rounds run the measurements in rotated order and
the figures are medians over rounds. The last line is ``ratio fast/official = X``, the median of
the per-round ratios (target >= 2).

``--accuracy`` checks instead that the fast decode does not move a trained model's accuracy beyond
seed noise: a JPEG class-folder dataset of patches cut from 17 real photographs (scikit-image's and
scikit-learn's; one class per photograph, training patches from its left two thirds, test patches
from the rest, 96-300 px, quality 75-95), on which ``pretrain.py`` trains a small ResNet-18 at 32 px,
so that most training crops decode at 1/2, 1/4 or 1/8 scale, once per seed with each decoder (the
same seed draws the same crops with both). It prints each run's final test top-1, the mean and
standard deviation over seeds per decoder, and the mean paired difference fast - PIL.

    .venv/bin/python bench/bench_loader.py             # 5 rounds of 400 images per measurement, 2-4 minutes
    .venv/bin/python bench/bench_loader.py --tiny      # the same code on a few images, in this process, in seconds
    .venv/bin/python bench/bench_loader.py --accuracy  # 3 seeds x 2 decoders, a few minutes
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import cpu_model, load_average  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
SIZES = ((500, 375), (375, 500), (500, 333), (333, 500))
PIPELINES = {"official": "official (PIL, v1 transforms, ToTensor, Normalize)",
             "pil": "ours, --no-fast_decode (PIL decode), uint8 out",
             "fast": "ours, fast decode (the default), uint8 out",
             "fast_normalized": "ours, fast decode, normalized in the loader (CPU)"}
DECODERS = {"decode_pil": "decode only: PIL open + convert",
            "decode_turbo": "decode only: simplejpeg (accurate IDCT, as ours)",
            "decode_turbo_fast": "decode only: simplejpeg fast IDCT + fast upsampling",
            "decode_torchvision": "decode only: torchvision.io.decode_jpeg"}
TARGET = 2.0
BATCH = 32


def write_photos(folder: Path, photos=PHOTOS, sizes=SIZES, seed: int = 0) -> list[Path]:
    """The benchmark's JPEG files, one class folder per photograph (see the module doc)."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for name in photos:
        image = Image.fromarray(getattr(skimage.data, name)())
        (folder / name).mkdir(parents=True, exist_ok=True)
        for width, height in sizes:
            scale = min(image.width / width, image.height / height)
            w, h = width * scale, height * scale
            box = ((image.width - w) / 2, (image.height - h) / 2, (image.width + w) / 2, (image.height + h) / 2)
            path = folder / name / f"{width}x{height}.jpg"
            image.resize((width, height), Image.BICUBIC, box=box).save(
                path, quality=int(rng.integers(75, 96)), subsampling=2)
            paths.append(path)
    return paths


# --------------------------------------------------------------------------- one measurement (its own process)

def official_reader(folder: str):
    from torchvision import datasets
    from torchvision import transforms as T

    from data.transforms import IMAGENET_MEAN, IMAGENET_STD

    transform = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(folder, transform=transform)
    return lambda positions: [dataset[p % len(dataset)] for p in positions]


def our_reader(folder: str, fast: bool, uint8: bool = True):
    import data
    from data.dataset import EpochSamples

    dataset = data.build_dataset("imagefolder", "train", root=folder, image_size=224, augment=True,
                                 interpolation="bilinear")
    dataset.fast_decode = fast
    epoch = EpochSamples(dataset, epoch_key=0, uint8=uint8)
    return lambda positions: epoch.__getitems__([(p, p % len(dataset)) for p in positions])


def decoder(folder: str, name: str):
    from PIL import Image

    blobs = [path.read_bytes() for path in sorted(Path(folder).rglob("*.jpg"))]
    if name == "decode_pil":
        def decode(blob):
            return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
    elif name == "decode_torchvision":
        import torch
        from torchvision.io import decode_jpeg

        tensors = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
        return lambda positions: [decode_jpeg(tensors[p % len(tensors)]) for p in positions]
    else:
        import simplejpeg

        fast = name == "decode_turbo_fast"

        def decode(blob):
            return simplejpeg.decode_jpeg(blob, fastdct=fast, fastupsample=fast)
    return lambda positions: [decode(blobs[p % len(blobs)]) for p in positions]


def measure(name: str, folder: str, images: int) -> dict:
    """Images per CPU second of one pipeline or decoder, read in batches of positions after a warm-up."""
    import torch

    torch.set_num_threads(1)
    if name == "official":
        read = official_reader(folder)
    elif name in PIPELINES:
        read = our_reader(folder, fast=name != "pil", uint8=name != "fast_normalized")
    else:
        read = decoder(folder, name)
    read(range(BATCH))  # warm-up: imports, allocator, file cache
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(BATCH, BATCH + images, BATCH):
        read(range(start, min(start + BATCH, BATCH + images)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"name": name, "images": images, "cpu_s": cpu, "wall_s": wall}


# --------------------------------------------------------------------------- the benchmark

def run_measurement(name: str, folder: Path, images: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--measure", name, "--folder", str(folder), "--images",
                          str(images)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"error: measurement {name} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def reduced_share(paths: list[Path], size: int = 224, draws: int = 2000) -> float:
    """Share of training crops (keyed draws over the files' sizes) that decode at a reduced DCT scale."""
    from data.decode import dct_scale, jpeg_size
    from data.transforms import RandomResizedCropFlip

    crop = RandomResizedCropFlip(size)
    sizes = [jpeg_size(path.read_bytes()) for path in paths]
    boxes = [crop.draw(*sizes[k % len(sizes)], [k]) for k in range(draws)]
    return sum(dct_scale(b.height, b.width, crop.size) > 1 for b in boxes) / draws


# --------------------------------------------------------------------------- the accuracy check

ACCURACY_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                   "camera", "moon", "brick", "grass", "gravel", "cell", "clock", "coins", "china.jpg", "flower.jpg")
ACCURACY_FLAGS = ["--dataset", "imagefolder", "--transform", "imagenet", "--image_size", "32", "--arch", "resnet18",
                  "--stem", "cifar", "--width", "0.25", "--norm", "bn", "-b", "64", "--lr", "0.002",
                  "--warmup_epochs", "1", "--workers", "0", "--device", "cpu"]


def photograph(name: str) -> np.ndarray:
    """A bundled photograph as uint8 H x W x 3 (scikit-learn's sample images end in .jpg)."""
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    import skimage.data

    image = getattr(skimage.data, name)()
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def write_patches(folder: Path, train: int, test: int, seed: int = 0) -> None:
    """``folder/{train,test}/<photograph>/`` JPEG patches (see the module doc)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in ACCURACY_PHOTOS:
        image = photograph(name)
        height, width = image.shape[:2]
        cut = 2 * width // 3
        for split, count, (left, right) in (("train", train, (0, cut)), ("test", test, (cut, width))):
            classdir = folder / split / name.removesuffix(".jpg")
            classdir.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = (int(rng.integers(96, min(300, side) + 1)) for side in (height, right - left))
                top, x = int(rng.integers(0, height - h + 1)), int(rng.integers(left, right - w + 1))
                Image.fromarray(image[top:top + h, x:x + w]).save(classdir / f"{i}.jpg",
                                                                  quality=int(rng.integers(75, 96)), subsampling=2)


def accuracy_check(seeds: int, epochs: int, per_class: int) -> None:
    """Train with each decoder for each seed; print the final test top-1s and their comparison."""
    print(f"cpu {cpu_model()}; load average {load_average()}; {len(ACCURACY_PHOTOS)} classes, {per_class} training "
          f"and {per_class // 3} test patches each; {epochs} epochs; flags: {' '.join(ACCURACY_FLAGS)}")
    top1 = {"fast": [], "pil": []}
    with tempfile.TemporaryDirectory() as tmp:
        write_patches(Path(tmp) / "data", per_class, per_class // 3)
        share = reduced_share(sorted((Path(tmp) / "data" / "train").rglob("*.jpg")), size=32)
        print(f"training crops decoded at a reduced scale by the fast decode: {share:.1%}")
        for seed in range(seeds):
            for decode in ("fast", "pil") if seed % 2 == 0 else ("pil", "fast"):
                run = Path(tmp) / f"{decode}{seed}"
                flags = [*ACCURACY_FLAGS, "--data", str(Path(tmp) / "data"), "--num_classes", str(len(ACCURACY_PHOTOS)),
                         "--epochs", str(epochs), "--seed", str(seed), "--save_dir", str(run)]
                flags += [] if decode == "fast" else ["--no-fast_decode"]
                env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
                subprocess.run([sys.executable, str(ROOT / "pretrain.py"), *flags], check=True, env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL)
                record = json.loads((run / "model.log.jsonl").read_text().splitlines()[-1])
                top1[decode].append(record["val_acc1"])
                print(f"seed {seed}  {decode:4}  test top-1 {record['val_acc1']:.4f}", flush=True)
    fast, pil = np.array(top1["fast"]), np.array(top1["pil"])
    spread = max(fast.std(ddof=1), pil.std(ddof=1)) if seeds > 1 else float("nan")
    print(f"fast decode: mean {fast.mean():.4f} (sd over seeds {fast.std(ddof=1) if seeds > 1 else float('nan'):.4f}); "
          f"PIL decode: mean {pil.mean():.4f} (sd {pil.std(ddof=1) if seeds > 1 else float('nan'):.4f})")
    print(f"paired difference fast - PIL = {(fast - pil).mean():+.4f} (per seed {', '.join(f'{d:+.4f}' for d in fast - pil)}); "
          f"seed spread (larger sd) = {spread:.4f}; load average after {load_average()}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--images", type=int, default=400, help="images per measurement")
    p.add_argument("--tiny", action="store_true",
                   help="2 photographs, 1 round of a few images, in this process: checks the code runs")
    p.add_argument("--accuracy", action="store_true", help="train with each decoder over seeds (module doc)")
    p.add_argument("--seeds", type=int, default=3, help="--accuracy: seeds per decoder")
    p.add_argument("--epochs", type=int, default=8, help="--accuracy: training epochs")
    p.add_argument("--per_class", type=int, default=48, help="--accuracy: training patches per class")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.folder, args.images)))
        return
    if args.accuracy:
        accuracy_check(args.seeds, args.epochs, args.per_class)
        return
    rounds, images = (1, 2 * BATCH) if args.tiny else (args.rounds, args.images)
    names = [*PIPELINES, *DECODERS]
    print(f"cpu {cpu_model()}, {os.cpu_count()} cores; one thread per measurement; "
          f"load average {load_average()} (1, 5, 15 min)")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp), PHOTOS[:2] if args.tiny else PHOTOS)
        print(f"{len(paths)} JPEGs (quality 75-95, 4:2:0) at {', '.join(f'{w} x {h}' for w, h in SIZES)}; "
              f"{rounds} round(s) of {images} images per measurement; crops decoded at a reduced scale: "
              f"{reduced_share(paths):.1%}")
        results = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                results[name].append(measure(name, tmp, images) if args.tiny else run_measurement(name, Path(tmp), images))
    rate = {name: [m["images"] / m["cpu_s"] for m in runs] for name, runs in results.items()}
    print(f"{'images per CPU-core-second':58}{'median':>8}{'min':>8}{'max':>8}")
    for name, label in {**PIPELINES, **DECODERS}.items():
        values = rate[name]
        print(f"{label:58}{statistics.median(values):8.0f}{min(values):8.0f}{max(values):8.0f}")
    ratio, pil, normalized = (statistics.median(f / o for f, o in zip(rate[name], rate["official"]))
                              for name in ("fast", "pil", "fast_normalized"))
    print(f"ratio pil decode/official = {pil:.2f}, fast normalized in the loader/official = {normalized:.2f}; "
          f"load average after {load_average()}; target fast/official >= {TARGET}: {'PASS' if ratio >= TARGET else 'MISS'}")
    print(f"ratio fast/official = {ratio:.2f}")


if __name__ == "__main__":
    main()
