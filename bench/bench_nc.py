"""Cost of the streaming neural-collapse statistics, measured in one run.

Prints two ratios (nothing is asserted about time):
  1. ClassStats updates (batches of --batch) + compute + every metric except the NCC (nc4) pass,
     divided by one float64 X^T X over the same features (already in float64, so the reference
     excludes the dtype conversion that ClassStats pays). Target: <= 3 (PASS / MISS).
  2. Speed-up over accumulating the within-class scatter one per-sample outer product at a time,
     class by class, as the paper's public evaluation does (float32, its dtype). That way is timed
     on the first --per-sample-subset samples only and extrapolated linearly to N.

Run from the repository root:  .venv/bin/python bench/bench_nc.py [--n 50000 --dim 512 --classes 100]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metrics.nc import ClassStats, nc_metrics_from_stats  # noqa: E402

TARGET_RATIO = 3.0


def best_time(fn, repeats: int) -> float:
    """Smallest wall-clock time of `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def streaming_metrics(features, labels, num_classes, weight, bias, batch):
    stats = ClassStats(num_classes, features.shape[1])
    for start in range(0, features.shape[0], batch):
        stats.update(features[start:start + batch], labels[start:start + batch])
    return nc_metrics_from_stats(stats.compute(), weight, bias)


def per_sample_scatter(features, labels, num_classes, batch):
    """Two passes (class sums, then per-sample outer products per class) in the features' dtype."""
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype)
    counts = torch.zeros(num_classes)
    for start in range(0, features.shape[0], batch):
        h, y = features[start:start + batch], labels[start:start + batch]
        for c in range(num_classes):
            h_c = h[y == c]
            sums[c] += h_c.sum(dim=0)
            counts[c] += h_c.shape[0]
    means = sums / counts.clamp_min(1).unsqueeze(1)
    scatter = torch.zeros(features.shape[1], features.shape[1], dtype=features.dtype)
    for start in range(0, features.shape[0], batch):
        h, y = features[start:start + batch], labels[start:start + batch]
        for c in range(num_classes):
            z = h[y == c] - means[c]
            scatter += (z.unsqueeze(2) @ z.unsqueeze(1)).sum(dim=0)
    return scatter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="number of samples N")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension D")
    parser.add_argument("--classes", type=int, default=100, help="number of classes C")
    parser.add_argument("--batch", type=int, default=1024, help="rows per ClassStats.update")
    parser.add_argument("--offset", type=float, default=10.0, help="positive common offset added to the features")
    parser.add_argument("--per-sample-subset", type=int, default=2000, help="samples timed for the per-sample way")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    n, d, c = args.n, args.dim, args.classes
    labels = torch.randint(0, c, (n,))
    features = (torch.randn(c, d)[labels] + torch.randn(n, d)).relu_() + args.offset  # float32, positive
    weight, bias = torch.randn(c, d), torch.randn(c)
    features64 = features.double()

    t_ref = best_time(lambda: features64.T @ features64, args.repeats)
    t_ours = best_time(lambda: streaming_metrics(features, labels, c, weight, bias, args.batch), args.repeats)
    sub = min(args.per_sample_subset, n)
    t_sub = best_time(lambda: per_sample_scatter(features[:sub], labels[:sub], c, args.batch), 1)
    t_per_sample = t_sub * n / sub

    ratio = t_ours / t_ref
    print(f"N={n} D={d} C={c} batch={args.batch} offset={args.offset} threads={torch.get_num_threads()} "
          f"(best of {args.repeats})")
    print(f"one float64 X^T X (reference)                 {t_ref:8.3f} s")
    print(f"ClassStats + compute + metrics (no NCC pass)  {t_ours:8.3f} s")
    print(f"ratio to X^T X: {ratio:.2f}  (target <= {TARGET_RATIO:g})  {'PASS' if ratio <= TARGET_RATIO else 'MISS'}")
    print(f"per-sample outer products (public-code way, float32): {t_sub:.3f} s on {sub} samples, "
          f"extrapolated linearly to N={n}: {t_per_sample:.1f} s")
    print(f"speed-up over the per-sample way: {t_per_sample / t_ours:.1f}x")


if __name__ == "__main__":
    main()
