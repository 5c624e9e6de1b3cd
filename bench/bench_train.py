"""Overhead of pretrain's training step over a bare PyTorch loop, measured side by side.

Both loops run the same model, batches, optimizer and loss (CE with label smoothing + alpha *
entropy); ours adds what pretrain.py does per step (device moves, autocast context, on-device
loss sums read every 25 steps, non-finite check, tqdm bar). Rounds alternate between the two so
machine noise hits both alike; the median per-step times give the ratio (target <= 1.15).

    .venv/bin/python bench/bench_train.py [--arch resnet18 --width 0.25 --image_size 32 --batch 128]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.trainer import nc_loss, train_one_epoch  # noqa: E402
from models import build_model  # noqa: E402
from nc_control import EntropyRegularizer  # noqa: E402

TARGET = 1.15


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=8, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(args.arch, 6, nc_control={"output_dim": int(512 * args.width), "hidden_mlp": int(2048 * args.width)},
                        stem="cifar", width=args.width, img_size=args.image_size).to(device)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4, weight_decay=0.05)
    entropy = EntropyRegularizer()
    batches = [(torch.randn(args.batch, 3, args.image_size, args.image_size), torch.randint(0, 6, (args.batch,)))
                for _ in range(args.steps)]

    def loss_fn(out, y):
        return nc_loss(out, y, entropy, 0.05, 0.1)

    def bare() -> None:
        model.train()
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            loss, _, _ = loss_fn(model(x, return_all=True), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours() -> None:
        train_one_epoch(model, batches, opt, loss_fn, device, show_progress=True, desc="bench")
        if device.type == "cuda":
            torch.cuda.synchronize()

    bare(), ours()  # warm-up
    times = {"bare": [], "ours": []}
    for _ in range(args.rounds):
        for name, fn in (("bare", bare), ("ours", ours)):
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / args.steps)
    b, o = statistics.median(times["bare"]), statistics.median(times["ours"])
    ratio = o / b
    print(f"{args.arch} width {args.width} at {args.image_size}px, batch {args.batch}, {device}: "
          f"bare {b * 1e3:.1f} ms/step, pretrain {o * 1e3:.1f} ms/step ({args.batch / o:.0f} img/s)")
    print(f"ratio pretrain/bare = {ratio:.3f}  (target <= {TARGET}: {'PASS' if ratio <= TARGET else 'MISS'})")


if __name__ == "__main__":
    main()
