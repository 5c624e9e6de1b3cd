"""Cost of the whole evaluation (NC + OOD detection + linear probing) against one plain forward
pass over the images it involves, measured side by side in one run (target: <= 1.3x).

Every evaluator reads features through the shared cache, so each (dataset, split) goes through
the model once, for all layers at once; what comes on top is the NC statistics, the OOD scorers
and the probes. The reference is `model(x)` over the same images in eval mode under no_grad
(the same data loading, batch size and threads).

    .venv/bin/python bench/bench_eval.py [--per_class 300 --width 0.25 --image_size 32]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data import build_dataset, parse_spec  # noqa: E402
from core.checkpoint import save_checkpoint  # noqa: E402
from core.config import parse_config  # noqa: E402
from evaluate.nc import NC_DEFAULTS, NC_TYPES, evaluate_nc  # noqa: E402
from evaluate.ood import OOD_DEFAULTS, OOD_TYPES, evaluate_ood  # noqa: E402
from evaluate.transfer import TRANSFER_DEFAULTS, TRANSFER_TYPES, evaluate_transfer  # noqa: E402
from models import build_model  # noqa: E402

TARGET = 1.3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per_class", type=int, default=300, help="images per class of every dataset involved")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=256)
    args = p.parse_args()

    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    d = int(512 * args.width)
    model = build_model("resnet18", 6, nc_control={"output_dim": d, "hidden_mlp": 4 * d}, stem="cifar",
                        width=args.width, img_size=args.image_size)
    ckpt = save_checkpoint(tmp / "ours.pth", model=model, epoch=0, config={})
    common = ["--ckpt", str(ckpt), "--names", "ours", "--cache_dir", str(tmp / "cache"), "--out_dir", str(tmp),
              "--image_size", str(args.image_size), "--max_per_class", str(args.per_class),
              "--batch_size", str(args.batch_size), "--device", "cpu"]
    nc_cfg = parse_config(NC_DEFAULTS, common, types=NC_TYPES)
    ood_cfg = parse_config(OOD_DEFAULTS, common, types=OOD_TYPES)
    lp_cfg = parse_config(TRANSFER_DEFAULTS, common, types=TRANSFER_TYPES)

    # every (dataset, split) the three evaluators read, each once
    involved = {(nc_cfg.dataset, "train"), (nc_cfg.dataset, "test")}
    involved |= {(s, "test") for s in ood_cfg.ood}
    involved |= {(s, split) for s in lp_cfg.transfer for split in ("train", "test")}
    datasets = []
    for text, split in sorted(involved):
        spec = parse_spec(text)
        datasets.append(build_dataset(**spec.kwargs(image_size=args.image_size, max_per_class=args.per_class),
                                      split=split))
    n_images = sum(len(ds) for ds in datasets)

    def forward_only() -> None:
        model.eval()
        with torch.no_grad():
            for ds in datasets:
                for x, _ in torch.utils.data.DataLoader(ds, batch_size=args.batch_size):
                    model(x)

    def evaluation() -> None:
        for cache in (tmp / "cache").glob("*"):  # a cold cache: features are extracted in this run
            import shutil
            shutil.rmtree(cache)
        evaluate_nc(nc_cfg)
        evaluate_ood(ood_cfg)
        evaluate_transfer(lp_cfg)

    timings = {"forward": [], "evaluation": []}
    for _ in range(2):
        for name, fn in (("forward", forward_only), ("evaluation", evaluation)):
            t0 = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t0)
    fwd, ev = min(timings["forward"]), min(timings["evaluation"])
    ratio = ev / fwd
    print(f"{n_images} images in {len(datasets)} (dataset, split) pairs; resnet18 width {args.width} at "
          f"{args.image_size}px with a projector; layers: NC all, OOD encoder+projector, probes all")
    print(f"one forward pass: {fwd:.1f} s   NC + OOD + probes from a cold cache: {ev:.1f} s")
    print(f"ratio evaluation/forward = {ratio:.2f}  (target <= {TARGET}: {'PASS' if ratio <= TARGET else 'MISS'})")


if __name__ == "__main__":
    main()
