"""The same checkpoint on two devices in float32: every named layer's features and their NC metrics agree.

For each architecture (default ResNet-18 and ViT-T with the method's projector and entropy term, as
in ``configs/paper/*_nc.yaml``), a checkpoint is trained for one short epoch on scikit-learn's digits
(shipped with scikit-learn, so the check needs no data set), unless ``--checkpoint`` names one. Its
test images go through the model on each of ``--devices`` (default ``cpu cuda``) in float32, TF32
off (``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``, and their
``fp32_precision`` equivalents), through :func:`features.extract.extract` (channels_last on CUDA, as
the evaluations run). Per named layer (``layer1`` ... ``classifier``, the logits) it compares:

- **features**: ``max |f_a - f_b| / rms(f_a)``, the largest element difference relative to the
  layer's feature scale (the root mean square over all its elements), against ``FEATURE_TOL``;
- **NC metrics** (:func:`metrics.nc.nc_metrics` in float64 on each device's features, every metric of
  the statistics: NC1, CDNV, VCI, the NC2 errors): ``|m_a - m_b| <= METRIC_TOL * |m_a| + METRIC_FLOOR``.

Why these tolerances. float32 rounds each operation to a relative u = 2^-24 = 6e-8. A convolution
output sums K = C_in k^2 products (ResNet-18: up to 512 x 9 = 4,608; a ViT-T matmul up to 768), which
the CPU (oneDNN) and cuDNN / cuBLAS add in different orders and by different algorithms (implicit
GEMM, split-K, Winograd or FFT, whose transforms cost up to about one decimal digit more), so one
layer's outputs differ by about sqrt(K) u ~ 4e-6 of their scale, up to ~4e-5 with those transforms.
The normalizations keep each layer's gain near one, so over the ~20 layers of ResNet-18 (12 blocks of
ViT-T) the roundings add like a random walk (x sqrt(20) ~ 4.5), and the largest of the N x D elements
lies a few standard deviations out: 1e-4 to 1e-3 at the very most. Measured, the CPU's float32 pass
differs from a float64 one by at most 1.2e-5 of the scale in any layer of the full-width models
(every report shows it per layer), so ``FEATURE_TOL`` = 1e-3 leaves CUDA's other summation orders a
factor of ~100. What the check must catch lies above it: weights rounded to TF32's 10-bit mantissa
alone move the deeper layers by 2e-3 to 8e-3 of the scale (last_conv, encoder, projector; TF32 also
rounds the activations), bf16 by ~1e-1, a wrong kernel by O(1).

The NC metrics are ratios of the features' (co)variances: a feature change of e of the scale moves
them by about 2e / s, s the spread they measure relative to the scale. Measured with ``--perturb 1e-2``
on the tiny ResNet-18, their relative change was at most ~3 times the layer's max|diff|/rms, so features
within 1e-3 keep them within ~3e-3: ``METRIC_TOL`` = 1e-2 (``METRIC_FLOOR`` for a metric near 0). A
strongly collapsed model (small s) amplifies more; its features are still held to ``FEATURE_TOL``.
Each layer also shows the CPU's own float32 rounding (float32 against a float64 pass on the CPU), the
measured size of what the tolerance allows.

``--perturb E`` adds E x rms noise to every parameter of the second device's copy, a forced
disagreement that must FAIL (the self-test of the check). Exit code 0: every layer PASS; 1: a FAIL.

    .venv/bin/python bench/device_agreement.py                                  # CPU vs CUDA, about a minute
    .venv/bin/python bench/device_agreement.py --checkpoint runs/x/model.pth    # any checkpoint, its own data
    .venv/bin/python bench/device_agreement.py --devices cpu cpu --tiny         # the same code in seconds: PASS
    .venv/bin/python bench/device_agreement.py --devices cpu cpu --tiny --perturb 1e-2   # must FAIL
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
from argparse import Namespace
from pathlib import Path

import torch
from torch.utils.data import Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import pretrain  # noqa: E402
from core.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from core.distributed import pick_device  # noqa: E402
from core.errors import cli_main  # noqa: E402
from core.io import atomic_write_text  # noqa: E402
from features.extract import extract  # noqa: E402
from metrics.nc import nc_metrics  # noqa: E402
from train.monitor import cap_per_class  # noqa: E402

FEATURE_TOL = 1e-3
METRIC_TOL = 1e-2
METRIC_FLOOR = 1e-6
# the checkpoints trained when none is given: the method's recipe (configs/paper/<arch>_nc.yaml) at a small size
RECIPES = {
    "resnet18": ["--arch", "resnet18", "--stem", "imagenet", "--norm", "gn_ws", "--output_dim", "512",
                 "--hidden_mlp", "2048", "--image_size", "64"],
    "vit_tiny": ["--arch", "vit_tiny", "--patch_size", "8", "--output_dim", "192", "--hidden_mlp", "768",
                 "--image_size", "64"],
}
TINY = {"resnet18": ["--stem", "cifar", "--width", "0.125", "--output_dim", "64", "--hidden_mlp", "256",
                     "--image_size", "16"],
        "vit_tiny": ["--patch_size", "8", "--image_size", "16"]}
TRAINING = ["--dataset", "digits", "--num_classes", "10", "--alpha", "0.05", "--epochs", "1", "--warmup_epochs", "0",
            "--lr", "1e-3", "-b", "64", "--workers", "0", "--seed", "0"]


def float32_exact() -> None:
    """Full float32 on CUDA: TF32 off for matmuls and cuDNN convolutions (both spellings of the switch)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    for backend in (getattr(torch.backends.cuda, "matmul", None), getattr(torch.backends.cudnn, "conv", None)):
        if backend is not None and hasattr(backend, "fp32_precision"):
            backend.fp32_precision = "ieee"


def make_checkpoint(arch: str, folder: Path, device: torch.device, tiny: bool) -> Path:
    """One short epoch of the method's recipe for ``arch`` on digits, trained on ``device``."""
    flags = TRAINING + RECIPES[arch] + (TINY[arch] + ["--max_per_class", "12"] if tiny else ["--max_per_class", "80"])
    save_dir = folder / arch
    with contextlib.redirect_stdout(io.StringIO()):
        pretrain.main(flags + ["--save_dir", str(save_dir), "--device", str(device), "--overwrite"])
    return save_dir / "model.pth"


def test_images(ckpt: dict, per_class: int):
    """The checkpoint's test split (evaluation transform), at most ``per_class`` images per class."""
    from data import build_dataset
    from train.run import dataset_kwargs

    cfg = Namespace(**ckpt["config"])
    dataset = build_dataset(cfg.dataset, "test", augment=False, **dataset_kwargs(cfg))
    return Subset(dataset, cap_per_class(dataset.targets, per_class, seed=0).tolist())


def perturb_(model: torch.nn.Module, scale: float, seed: int = 0) -> None:
    """Add ``scale`` x rms(p) Gaussian noise to every floating parameter (drawn on the CPU by ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel():
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
                p.add_((scale * p.double().pow(2).mean().sqrt() * noise).to(p))


def layer_features(ckpt: dict, device: torch.device, images, *, float64: bool = False,
                   perturb: float = 0.0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every named layer's pooled features of ``images`` on ``device`` (float32, or float64 weights and
    inputs for the CPU reference)."""
    model = model_from_checkpoint(ckpt, device="cpu")
    if perturb:
        perturb_(model, perturb)
    if float64:
        model = model.double()
        model.register_forward_pre_hook(lambda _module, args: tuple(a.double() for a in args))
    layers = list(model.named_layers())
    sink = extract(model, images, layers, device=device, batch_size=64, show_progress=False, precision="float32")
    return {name: value.double() for name, value in sink.features.items()}, sink.labels


def feature_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """max |reference - other| / rms(reference) (the max itself for an all-zero layer)."""
    scale = reference.pow(2).mean().sqrt().item()
    error = (reference - other).abs().max().item()
    return error / scale if scale > 0 else error


def metric_values(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float] | str:
    try:
        return nc_metrics(features, labels, num_classes)
    except ValueError as exc:  # e.g. a layer whose class means coincide: no metric to compare
        return str(exc)


def compare_layer(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, num_classes: int,
                  reference: torch.Tensor | None = None) -> dict:
    """The agreement of one layer's features on two devices (the module doc's two criteria)."""
    error = feature_error(a, b)
    result = {"feature_error": error, "feature_pass": error <= FEATURE_TOL,
              "float32_rounding": feature_error(reference, a) if reference is not None else None}
    ma, mb = metric_values(a, labels, num_classes), metric_values(b, labels, num_classes)
    if isinstance(ma, str) or isinstance(mb, str):
        result.update(metrics={}, metric_error=None, metric_pass=isinstance(ma, str) and isinstance(mb, str),
                      metric_note=ma if isinstance(ma, str) else mb)
    else:
        ok = {k: abs(ma[k] - mb[k]) <= METRIC_TOL * abs(ma[k]) + METRIC_FLOOR for k in ma}
        rel = {k: abs(ma[k] - mb[k]) / max(abs(ma[k]), METRIC_FLOOR) for k in ma}
        result.update(metrics={k: [ma[k], mb[k]] for k in ma}, metric_error=max(rel.values(), default=0.0),
                      metric_pass=all(ok.values()))
    result["pass"] = bool(result["feature_pass"] and result["metric_pass"])
    return result


def check_checkpoint(path: Path, devices: list[torch.device], per_class: int, perturb: float) -> dict:
    """Every named layer of the checkpoint compared on ``devices[0]`` and ``devices[1]``."""
    ckpt = load_checkpoint(path)
    images = test_images(ckpt, per_class)
    num_classes = ckpt["model_kwargs"]["num_classes"]
    first, labels = layer_features(ckpt, devices[0], images)
    second, labels_b = layer_features(ckpt, devices[1], images, perturb=perturb)
    if not torch.equal(labels, labels_b):
        raise RuntimeError("the two passes saw different labels")
    reference = layer_features(ckpt, devices[0], images, float64=True)[0] if devices[0].type == "cpu" else {}
    layers = {name: compare_layer(first[name], second[name], labels, num_classes, reference.get(name))
              for name in first}
    argmax = (first["classifier"].argmax(1) == second["classifier"].argmax(1)).double().mean().item()
    return {"checkpoint": str(path), "images": len(images), "layers": layers, "top1_agreement": argmax,
            "pass": all(r["pass"] for r in layers.values())}


def describe(arch: str, result: dict) -> list[str]:
    def fmt(value):
        return "-" if value is None else f"{value:.2e}"

    lines = [f"{arch}: {result['images']} test images of {result['checkpoint']}; predicted classes agree on "
             f"{100 * result['top1_agreement']:.1f}%"]
    for name, r in result["layers"].items():
        lines.append(f"  {name:16} features max|diff|/rms {fmt(r['feature_error'])} (tol {FEATURE_TOL:.0e}; "
                     f"CPU float32 vs float64 {fmt(r['float32_rounding'])})  NC metrics max rel diff "
                     f"{fmt(r['metric_error'])} (tol {METRIC_TOL:.0e})  {'PASS' if r['pass'] else 'FAIL'}"
                     + (f"  [metrics: {r['metric_note']}]" if r.get("metric_note") else ""))
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", nargs=2, default=["cpu", "cuda"], help="the two devices compared")
    p.add_argument("--archs", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--checkpoint", help="check this checkpoint (on its own dataset's test split) instead")
    p.add_argument("--per_class", type=int, default=50, help="test images per class")
    p.add_argument("--perturb", type=float, default=0.0, help="noise on the second device's weights (self-test)")
    p.add_argument("--tiny", action="store_true", help="tiny models at 16 px, trained on 12 images per class")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    devices = [pick_device(d) for d in args.devices]
    float32_exact()
    results = {}
    with tempfile.TemporaryDirectory(prefix="device_agreement_") as tmp:
        targets = {"checkpoint": Path(args.checkpoint)} if args.checkpoint else {
            arch: make_checkpoint(arch, Path(tmp), devices[-1], args.tiny) for arch in args.archs}
        for arch, path in targets.items():
            results[arch] = check_checkpoint(path, devices, 5 if args.tiny else args.per_class, args.perturb)
            print("\n".join(describe(arch, results[arch])), flush=True)
    verdict = "PASS" if all(r["pass"] for r in results.values()) else "FAIL"
    summary = {"devices": [str(d) for d in devices], "feature_tol": FEATURE_TOL, "metric_tol": METRIC_TOL,
               "metric_floor": METRIC_FLOOR, "tf32": False, "perturb": args.perturb, "results": results,
               "verdict": verdict}
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=1, default=_json_value) + "\n")
    worst = max((r["feature_error"] for res in results.values() for r in res["layers"].values()), default=math.nan)
    print(f"{devices[0]} vs {devices[1]} in float32: largest feature difference {worst:.2e} of the feature scale "
          f"(tol {FEATURE_TOL:.0e}), NC metrics within {METRIC_TOL:.0e}: {verdict}", flush=True)
    if verdict != "PASS":
        sys.exit(1)
    return 0


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON: {value!r}")


if __name__ == "__main__":
    main()
