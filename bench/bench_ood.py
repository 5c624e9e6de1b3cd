"""The `gmm` OOD scorer against straightforward MultivariateNormal versions, measured in one run.

1. Reference (the default line and the target): per-class means and 1/(n_c - 1) covariances
   in float64; for each jitter of the project's ladder (0, 1e-20, ..., 1), build
   `torch.distributions.MultivariateNormal(loc=means, covariance_matrix=covs + jitter * I)` until
   the construction succeeds (it validates positive definiteness); then `log_prob(z[:, None, :])`
   over batches of the test set and logsumexp over the classes. Both sides use the same ladder,
   so the ratio measures the implementation. Defaults: 100 classes of 100 samples in 512
   dimensions (covariances singular, rescued by the jitter).
2. DDU's algorithm (one line per --ddu-dims): the same statistics, but DDU's own jitter loop
   (0, the smallest float64, 1e-308, 1e-307, ..., 1e-1, building the MultivariateNormal at each)
   and its scoring, `log_prob` of the whole test set at once; on DDU's scale of problem: 10
   classes of 1,000 samples (CIFAR-10-like), at D = 128 and D = 512.

3. The scorer zoo: fit and score seconds of each of the 22 scorers of `ood.SCORERS` (default
   options), fitted on --zoo-train synthetic non-negative features (default 5 x --train = 50,000)
   with a linear classifier, scoring --test rows (10,000), at --dim and --classes (512, 100); one
   run each (no repeats). Every scorer is fitted on the training features here, also those
   OpenOOD fits on a validation split.
4. The parameter search as a user runs it (``eval_ood.py --search``: every candidate of all 22
   scorers' search spaces at the encoder and the projector of the demo's NC-controlled ResNet-18,
   untrained, on the embedded protocol with --search-per-class images per class, textures' train
   split as the validation OOD set), from a warm feature cache, against one feature extraction of
   the same images (the cache filled from cold, all layers in one forward pass each): the line
   ``search/extraction``.

Prints the jitter each side chose, the largest relative difference between the score vectors
(target <= 1e-6), fit and score times (each the best of --repeats, the sides alternating, so
that load from other processes distorts the ratio less), the zoo's table, and as the last line
the speed-up of fit + score over the reference (target >= 3, PASS / MISS). Nothing is asserted
about time.

Run from the repository root:  .venv/bin/python bench/bench_ood.py [--train 10000 --test 10000 --dim 512 --classes 100]
Small and fast:                .venv/bin/python bench/bench_ood.py --train 600 --test 300 --dim 16 --classes 6 --ddu-dims 8 --repeats 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ood import JITTER_LADDER, SCORERS, build_scorer  # noqa: E402

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
    """A batched MultivariateNormal over the classes with the first jitter that constructs."""
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
    """log_prob of each test batch (all of it at once for batch <= 0) against every class, then logsumexp."""
    chunks = test.split(batch) if batch > 0 else [test]
    log_probs = torch.cat([gmm.log_prob(chunk.double()[:, None, :]) for chunk in chunks])
    return torch.logsumexp(log_probs, dim=1)


def timed(fn):
    """(fn(), wall-clock seconds)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def race(train, labels, test, num_classes, ladder, batch, reference_batch, repeats):
    """Best-of-``repeats`` fit and score times of both sides (alternating), their scores and jitters."""
    times = {key: float("inf") for key in ("ours_fit", "ours_score", "ref_fit", "ref_score")}
    for _ in range(repeats):
        scorer, seconds = timed(lambda: build_scorer("gmm", batch_size=batch).fit(train, labels))
        times["ours_fit"] = min(times["ours_fit"], seconds)
        ours, seconds = timed(lambda: scorer.score(test))
        times["ours_score"] = min(times["ours_score"], seconds)
        (mvn, ref_jitter), seconds = timed(lambda: reference_fit(train, labels, num_classes, ladder))
        times["ref_fit"] = min(times["ref_fit"], seconds)
        reference, seconds = timed(lambda fitted=mvn: reference_score(fitted, test, reference_batch))
        times["ref_score"] = min(times["ref_score"], seconds)
        mvn = None  # free the reference's matrices before the next round
    rel_diff = ((ours - reference).abs() / reference.abs()).max().item()
    return times, rel_diff, scorer.jitter, ref_jitter, reference


def zoo_problem(num_train, num_test, dim, num_classes, seed):
    """Non-negative features (|synthetic_features|), their labels, test rows and a linear classifier:
    W = the class means, b = -||mean||^2 / 2 (nearest-mean rule), all float32 as a cache holds them."""
    train, labels, test = synthetic_features(num_train, num_test, dim, num_classes, seed)
    train, test = train.abs(), test.abs()
    means = torch.zeros(num_classes, dim).index_add_(0, labels, train) / torch.bincount(labels, minlength=num_classes)[:, None]
    return train, labels, test, means, -0.5 * means.square().sum(dim=1)


def zoo_times(train, labels, test, weight, bias) -> list[tuple[str, float, float, str]]:
    """(name, fit s, score s, note) of every registered scorer with its default options; a scorer
    that refuses the data (ValueError) or warns gets its one line as the note."""
    rows = []
    for name in SCORERS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                scorer, fit_s = timed(lambda: build_scorer(name).fit(train, labels, weight=weight, bias=bias))
                scores, score_s = timed(lambda: scorer.score(test))
                note = "" if torch.isfinite(scores).all() else "non-finite scores"
            except ValueError as exc:
                fit_s = score_s = float("nan")
                note = f"refused: {exc}"
        note = note or "; ".join(str(w.message) for w in caught)
        rows.append((name, fit_s, score_s, note))
    return rows


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def search_vs_extraction(per_class: int, image_size: int = 32) -> tuple[float, float, int]:
    """Seconds of one cold-cache feature extraction of the search's images and of the whole search
    from the then warm cache (see the module docstring); also the candidates per model and layer."""
    import tempfile

    from core.checkpoint import save_checkpoint
    from core.config import parse_config
    from evaluate.ood import OOD_OPTIONS, evaluate_ood, plan_ood
    from evaluate.runs import features, open_runs
    from evaluate.search import ScorerSpec
    from models import build_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_search_"))
    torch.manual_seed(0)
    model = build_model("resnet18", 6, nc_control={"output_dim": 128, "hidden_mlp": 512}, stem="cifar", width=0.25,
                        img_size=image_size)
    ckpt = save_checkpoint(tmp / "ours.pth", model=model, epoch=0, config={})
    cfg = parse_config(argv=["--ckpt", str(ckpt), "--names", "ours", "--cache_dir", str(tmp / "cache"),
                             "--out_dir", str(tmp / "out"), "--image_size", str(image_size), "--max_per_class",
                             str(per_class), "--device", "cpu", "--no-histograms", "--search",
                             "--val_ood", "val_textures=textures", "--scorers", *SCORERS], **OOD_OPTIONS)
    plan = plan_ood(cfg)
    (run,) = open_runs(cfg)
    layers = ["encoder", "projector"]
    involved = [(plan.id, "train"), (plan.id, "test"), *plan.tests.values(), *plan.vals.values()]
    t0 = time.perf_counter()
    for spec, split in involved:  # a cold cache: every named layer of each (dataset, split) in one forward pass
        features(cfg, run, spec, split, layers)
    extraction = time.perf_counter() - t0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate_ood(cfg, plan)
    search = time.perf_counter() - t0
    return extraction, search, sum(len(ScorerSpec(name).candidates()) for name in SCORERS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1024, help="test samples per batch, both sides")
    parser.add_argument("--repeats", type=int, default=3, help="each time is the best of this many (alternating sides)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ddu-ladder", action="store_true", help="the reference uses DDU's jitter ladder (slow)")
    parser.add_argument("--ddu-dims", type=int, nargs="*", default=[128, 512],
                        help="dimensions of the lines against DDU's algorithm (none: skip them)")
    parser.add_argument("--ddu-classes", type=int, default=10)
    parser.add_argument("--ddu-per-class", type=int, default=1000, help="training samples per class (and test samples)")
    parser.add_argument("--search-per-class", type=int, default=300,
                        help="images per class of the search's datasets (0: skip the search line)")
    parser.add_argument("--zoo-train", type=int, default=None,
                        help="training rows of the zoo's timings (default 5 x --train; 0: skip the zoo)")
    args = parser.parse_args(argv)
    load = lambda: " ".join(f"{v:.2f}" for v in os.getloadavg())  # noqa: E731

    train, labels, test = synthetic_features(args.train, args.test, args.dim, args.classes, args.seed)
    print(f"load average {load()} (1, 5, 15 min); torch threads {torch.get_num_threads()}; best of {args.repeats}")
    print(f"reference: train {tuple(train.shape)}, test {tuple(test.shape)}, {args.classes} classes "
          f"({args.train // args.classes} samples per class), batch {args.batch}")
    ladder = DDU_LADDER if args.ddu_ladder else JITTER_LADDER
    times, rel_diff, jitter, ref_jitter, reference = race(train, labels, test, args.classes, ladder, args.batch,
                                                          args.batch, args.repeats)
    ours_total, ref_total = times["ours_fit"] + times["ours_score"], times["ref_fit"] + times["ref_score"]
    print(f"jitter: gmm scorer {jitter:g}, reference {ref_jitter:g} ({'DDU' if args.ddu_ladder else 'project'} ladder)")
    print(f"scores: range [{reference.min().item():.4g}, {reference.max().item():.4g}], "
          f"max relative difference {rel_diff:.2e} (target <= {TARGET_REL_DIFF:g}: {verdict(rel_diff <= TARGET_REL_DIFF)})")
    print(f"{'':12}{'fit s':>9}{'score s':>9}{'total s':>9}")
    print(f"{'gmm scorer':12}{times['ours_fit']:9.2f}{times['ours_score']:9.2f}{ours_total:9.2f}")
    print(f"{'reference':12}{times['ref_fit']:9.2f}{times['ref_score']:9.2f}{ref_total:9.2f}")

    for dim in args.ddu_dims:
        n = args.ddu_classes * args.ddu_per_class
        d_train, d_labels, d_test = synthetic_features(n, n, dim, args.ddu_classes, args.seed + dim)
        d_times, d_diff, d_jitter, d_ref_jitter, _ = race(d_train, d_labels, d_test, args.ddu_classes, DDU_LADDER,
                                                          args.batch, 0, args.repeats)
        ours = d_times["ours_fit"] + d_times["ours_score"]
        ddu = d_times["ref_fit"] + d_times["ref_score"]
        print(f"DDU algorithm at D = {dim} ({args.ddu_classes} classes x {args.ddu_per_class}, {n} test; jitter "
              f"{d_ref_jitter:g} / ours {d_jitter:g}): {ddu:.2f} s vs gmm scorer {ours:.2f} s, speed-up "
              f"{ddu / ours:.2f}x (fit {d_times['ref_fit'] / d_times['ours_fit']:.2f}x, score "
              f"{d_times['ref_score'] / d_times['ours_score']:.2f}x); scores max relative difference {d_diff:.1e} "
              f"{verdict(d_diff <= TARGET_REL_DIFF)}")
    zoo_train = 5 * args.train if args.zoo_train is None else args.zoo_train
    if zoo_train > 0:
        problem = zoo_problem(zoo_train, args.test, args.dim, args.classes, args.seed + 1)
        print(f"scorer zoo: fit on {zoo_train} x {args.dim} ({args.classes} classes), score {args.test} rows, "
              "float32 features, default options, one run each")
        print(f"{'scorer':12}{'fit s':>9}{'score s':>9}  note")
        for name, fit_s, score_s, note in zoo_times(*problem):
            print(f"{name:12}{fit_s:9.2f}{score_s:9.2f}  {note}".rstrip())
    if args.search_per_class > 0:
        extraction, search, candidates = search_vs_extraction(args.search_per_class)
        print(f"parameter search (eval_ood.py --search, all {len(SCORERS)} scorers, {candidates} candidates per "
              f"model and layer) from the cache: {search:.1f} s; one extraction of the same images: "
              f"{extraction:.1f} s; ratio search/extraction = {search / extraction:.2f}")
    speedup = ref_total / ours_total
    print(f"load average after {load()}")
    print(f"speed-up (fit + score): {speedup:.2f}x against the torch.distributions reference (fit "
          f"{times['ref_fit'] / times['ours_fit']:.2f}x, score {times['ref_score'] / times['ours_score']:.2f}x); "
          f"target >= {TARGET_SPEEDUP:g}: {verdict(speedup >= TARGET_SPEEDUP)}")


if __name__ == "__main__":
    main()
