"""The `gmm` OOD scorer against a straightforward MultivariateNormal version, measured in one run.

Reference (the way DDU fits and evaluates its GMM): per-class means and 1/(n_c - 1) covariances
in float64; for each jitter of the ladder, build
`torch.distributions.MultivariateNormal(loc=means, covariance_matrix=covs + jitter * I)` until
the construction succeeds (it validates positive definiteness); then `log_prob(z[:, None, :])`
over batches of the test set and logsumexp over the classes.

Both sides use the project's jitter ladder (0, 1e-20, ..., 1), so the ratio measures the
implementation. DDU's own ladder (0, tiny, 1e-308, ..., 1e-1) can be timed with --ddu-ladder;
with fewer samples per class than dimensions (the defaults: 100 per class, 512 dimensions) it
tries ~300 jitters (297 here) before one works, and its fit alone takes minutes.

Prints the jitter each side chose, the largest relative difference between the two score
vectors (target <= 1e-6), fit and score times (each the best of --repeats, the two sides
alternating, so that load from other processes distorts the ratio less), and the speed-up of
fit + score (target >= 3, PASS / MISS). Nothing is asserted about time.

Run from the repository root:  .venv/bin/python bench/bench_ood.py [--train 10000 --test 10000 --dim 512 --classes 100]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ood import JITTER_LADDER, build_scorer  # noqa: E402

TARGET_SPEEDUP = 3.0
TARGET_REL_DIFF = 1e-6
DDU_LADDER = (0.0, torch.finfo(torch.float64).tiny) + tuple(10.0 ** e for e in range(-308, 0))


def synthetic_features(num_train, num_test, dim, num_classes, seed):
    """Gaussian class clusters (means 3 * N(0, I), unit noise); test = half ID, half wider OOD."""
    gen = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(num_classes, dim, generator=gen)
    train_labels = torch.arange(num_train) % num_classes
    train = means[train_labels] + torch.randn(num_train, dim, generator=gen)
    num_id = num_test // 2
    test_id = means[torch.arange(num_id) % num_classes] + torch.randn(num_id, dim, generator=gen)
    test_ood = means.mean(dim=0) + 3.0 * torch.randn(num_test - num_id, dim, generator=gen)
    return train, train_labels, torch.cat([test_id, test_ood])


def reference_fit(train, labels, num_classes, ladder):
    """DDU-style fit: a batched MultivariateNormal over the classes, first jitter that constructs."""
    z = train.double()
    means = torch.stack([z[labels == c].mean(dim=0) for c in range(num_classes)])
    covs = torch.stack([torch.mm((z[labels == c] - means[c]).T, z[labels == c] - means[c])
                        / ((labels == c).sum() - 1) for c in range(num_classes)])
    eye = torch.eye(z.shape[1], dtype=torch.float64)
    for jitter in ladder:
        try:
            return torch.distributions.MultivariateNormal(loc=means, covariance_matrix=covs + jitter * eye), jitter
        except (RuntimeError, ValueError):
            continue
    raise ValueError("no jitter made the reference covariances positive definite")


def reference_score(gmm, test, batch):
    """DDU-style evaluation: log_prob of each test batch against every class, then logsumexp."""
    log_probs = torch.cat([gmm.log_prob(chunk.double()[:, None, :]) for chunk in test.split(batch)])
    return torch.logsumexp(log_probs, dim=1)


def timed(fn):
    """(fn(), wall-clock seconds)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1024, help="test samples per batch, both sides")
    parser.add_argument("--repeats", type=int, default=3, help="each time is the best of this many (alternating sides)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ddu-ladder", action="store_true", help="reference uses DDU's jitter ladder (slow)")
    args = parser.parse_args(argv)

    train, labels, test = synthetic_features(args.train, args.test, args.dim, args.classes, args.seed)
    print(f"train {tuple(train.shape)}, test {tuple(test.shape)}, {args.classes} classes "
          f"({args.train // args.classes} samples per class), batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")

    ladder = DDU_LADDER if args.ddu_ladder else JITTER_LADDER
    times = {key: float("inf") for key in ("ours_fit", "ours_score", "ref_fit", "ref_score")}
    for _ in range(args.repeats):
        scorer, seconds = timed(lambda: build_scorer("gmm", batch_size=args.batch).fit(train, labels))
        times["ours_fit"] = min(times["ours_fit"], seconds)
        ours, seconds = timed(lambda: scorer.score(test))
        times["ours_score"] = min(times["ours_score"], seconds)
        (gmm, ref_jitter), seconds = timed(lambda: reference_fit(train, labels, args.classes, ladder))
        times["ref_fit"] = min(times["ref_fit"], seconds)
        reference, seconds = timed(lambda: reference_score(gmm, test, args.batch))
        times["ref_score"] = min(times["ref_score"], seconds)
        del gmm

    rel_diff = ((ours - reference).abs() / reference.abs()).max().item()
    ours_total, ref_total = times["ours_fit"] + times["ours_score"], times["ref_fit"] + times["ref_score"]
    speedup = ref_total / ours_total
    print(f"jitter: gmm scorer {scorer.jitter:g}, reference {ref_jitter:g} "
          f"({'DDU' if args.ddu_ladder else 'project'} ladder)")
    print(f"scores: range [{reference.min().item():.4g}, {reference.max().item():.4g}], "
          f"max relative difference {rel_diff:.2e} "
          f"(target <= {TARGET_REL_DIFF:g}: {'PASS' if rel_diff <= TARGET_REL_DIFF else 'MISS'})")
    print(f"{'':12}{'fit s':>9}{'score s':>9}{'total s':>9}")
    print(f"{'gmm scorer':12}{times['ours_fit']:9.2f}{times['ours_score']:9.2f}{ours_total:9.2f}")
    print(f"{'reference':12}{times['ref_fit']:9.2f}{times['ref_score']:9.2f}{ref_total:9.2f}")
    print(f"speed-up (fit + score): {speedup:.2f}x  (fit {times['ref_fit'] / times['ours_fit']:.2f}x, "
          f"score {times['ref_score'] / times['ours_score']:.2f}x)  "
          f"target >= {TARGET_SPEEDUP:g}: {'PASS' if speedup >= TARGET_SPEEDUP else 'MISS'}")


if __name__ == "__main__":
    main()
