"""Linear probes on frozen features: the paper's AdamW recipes and an L-BFGS logistic regression.

``solver='adamw'`` trains a linear layer ``logits = W h + b`` with AdamW on cross-entropy with
label smoothing 0.1 for 30 epochs at a constant lr, evaluated on the test features after every
epoch; the paper reports the best test top-1 over the epochs. The features are used as they come
(no centring or standardization). Two recipes (:data:`PROBE_RECIPES`), as the official evaluation
code has two:

- ``'cnn'`` (``ood_gen/linear_probe.py``, ``ood_det/linear_probe_det.py``, ``nc_eval/linear_probe_nc.py``):
  W ~ N(0, 0.01^2), b = 0; lr 1e-3, weight decay 0; shuffled mini-batches of 256.
- ``'vit'`` (``vit_exp_all/main_lp.py``, ``main_ood_det.py``, ``main_evalnc.py`` with the shipped
  ``eval_*.sh``): W ~ trunc_normal(0, 0.01^2) and ``nn.Linear``'s default bias U(-1/sqrt(D), 1/sqrt(D));
  lr 1e-2, weight decay 1e-4; one step per 2048 samples (512 per GPU on 4 GPUs, the probe wrapped in
  DistributedDataParallel, so each step averages the four gradients); and the ViT pretraining's
  repeated-augmentation sampler, which the probe scripts leave on: each epoch draws a permutation,
  repeats every index 3 times in a row and keeps the first ``N // 256 * 256`` positions (timm's
  ``RepeatAugSampler``; on 4 GPUs the four shares of a step are exactly those 2048 consecutive
  positions). An "epoch" so covers about a third of the distinct training samples, each three times.

Each epoch draws its order anew (``order='shuffle'``, the default). ``order='fixed'`` draws it once
and reuses it every epoch, as two official probes do: the CNN probes read features extracted once
in one random order through an unshuffled loader, and the ViT NC probe (``main_evalnc.py``) never
advances its sampler's epoch, so it sees the same third of the training set every epoch.

``solver='lbfgs'`` is multinomial logistic regression fitted to convergence, the protocol of
Kornblith, Shlens & Le, "Do Better ImageNet Models Transfer Better?" (CVPR 2019): it minimizes

    J(W, b) = 1/N sum_i CE(W h_i + b, y_i) + l2/2 ||W||_F^2        (bias not penalized)

full-batch with ``torch.optim.LBFGS`` (strong-Wolfe line search) in float32 on the features'
device. ``l2`` is chosen on a stratified, seeded validation split of the training features
(``val_fraction``, default 20%) over a log-spaced grid (default :data:`L2_GRID`, 1e-6 ... 10 in
half-decades), swept from the strongest penalty to the weakest with warm starts; the value with
the highest validation accuracy wins (ties: the stronger penalty), then the probe is refitted on
all training features with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.progress import progress

L2_GRID = tuple(float(v) for v in np.logspace(-6, 1, 15))
SOLVERS = ("adamw", "lbfgs")
ORDERS = ("shuffle", "fixed")
_EVAL_CHUNK = 65536


@dataclass(frozen=True)
class ProbeRecipe:
    """An official AdamW probe recipe (see the module docstring): ``init`` is ``'normal'``
    (W ~ N(0, 0.01^2), b = 0) or ``'trunc_normal'`` (W ~ trunc_normal(0, 0.01^2), b ~ U(+-1/sqrt(D)));
    ``repeats`` > 1 draws each epoch's order with the repeated-augmentation sampler."""

    lr: float
    weight_decay: float
    batch_size: int
    init: str
    repeats: int


PROBE_RECIPES = {
    "cnn": ProbeRecipe(lr=1e-3, weight_decay=0.0, batch_size=256, init="normal", repeats=1),
    "vit": ProbeRecipe(lr=1e-2, weight_decay=1e-4, batch_size=2048, init="trunc_normal", repeats=3),
}


@dataclass
class ProbeResult:
    """A trained probe: ``weight`` (C x D) and ``bias`` (C) on the CPU in float32;
    ``final_acc`` / ``best_acc`` = test top-1 after the last epoch / best over the epochs (None
    without test features; equal for lbfgs, which has one final model); ``history`` = per-epoch
    records (adamw) or per-penalty validation records (lbfgs); ``l2`` = the chosen penalty (lbfgs)."""

    weight: torch.Tensor
    bias: torch.Tensor
    final_acc: float | None
    best_acc: float | None
    history: list[dict] = field(default_factory=list)
    solver: str = "adamw"
    l2: float | None = None
    best_correct: np.ndarray | None = None  # per test sample, right at the epoch of best_acc (its first)


def probe_logits(result: ProbeResult, x: torch.Tensor) -> torch.Tensor:
    """``x W^T + b`` (N x C, float32) on ``x``'s device."""
    return F.linear(x.float(), result.weight.to(x.device), result.bias.to(x.device))


def _checked(x: torch.Tensor, y: torch.Tensor, num_classes: int, what: str, device: torch.device):
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{what} features and labels must be torch tensors")
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what} features must be a non-empty N x D matrix, got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{what} labels must be a vector of the {x.shape[0]} feature rows, got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"{what} labels must be integer class ids, got {y.dtype}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"{what} labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
                         f"got range [{int(y.min())}, {int(y.max())}]")
    x = x.to(device=device, dtype=torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} features contain NaN or infinite values; check the feature extraction")
    return x, y.to(device=device, dtype=torch.long)


def _correct(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample, whether the top logit is its label (ties broken by ``torch.topk``, as topk_correct)."""
    with torch.no_grad():
        return torch.cat([F.linear(x[s:s + _EVAL_CHUNK], weight, bias).topk(1, dim=1).indices[:, 0]
                          == y[s:s + _EVAL_CHUNK] for s in range(0, len(y), _EVAL_CHUNK)])


def _accuracy(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return int(_correct(weight, bias, x, y).sum()) / len(y)


def _init_probe(num_classes: int, dim: int, init: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if init == "trunc_normal":
        weight = torch.nn.init.trunc_normal_(torch.empty(num_classes, dim), std=0.01, generator=gen)
        bound = 1 / math.sqrt(dim)
        return weight, torch.nn.init.uniform_(torch.empty(num_classes), -bound, bound, generator=gen)
    return torch.randn(num_classes, dim, generator=gen) * 0.01, torch.zeros(num_classes)


def _epoch_order(n: int, repeats: int, gen: torch.Generator) -> torch.Tensor:
    """A shuffle of the n samples, or with ``repeats`` > 1 timm's repeated-augmentation order."""
    if repeats <= 1:
        return torch.randperm(n, generator=gen)
    from timm.data.distributed_sampler import RepeatAugSampler

    sampler = RepeatAugSampler(range(n), num_replicas=1, rank=0, shuffle=True, num_repeats=repeats)
    sampler.set_epoch(int(torch.randint(2**62, (1,), generator=gen)))
    return torch.tensor(list(sampler), dtype=torch.long)


def _epoch_orders(n: int, repeats: int, gen: torch.Generator, order: str = "shuffle"):
    """Each epoch's order (:func:`_epoch_order`): drawn anew every epoch, or with ``order='fixed'``
    drawn once and repeated; the first epoch's is the same either way."""
    first = _epoch_order(n, repeats, gen)
    yield first
    while True:
        yield first if order == "fixed" else _epoch_order(n, repeats, gen)


def _train_adamw(x, y, num_classes, test, *, epochs, lr, weight_decay, batch_size, label_smoothing, seed,
                 show_progress, init="normal", repeats=1, order="shuffle") -> ProbeResult:
    gen = torch.Generator().manual_seed(seed)
    weight, bias = (t.to(x.device).requires_grad_() for t in _init_probe(num_classes, x.shape[1], init, gen))
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    history: list[dict] = []
    best_correct = None
    orders = _epoch_orders(len(y), repeats, gen, order)
    for epoch in progress(range(epochs), show=show_progress, desc="probe", unit="epoch", leave=False):
        order_idx = next(orders).to(x.device)
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), device=x.device, dtype=torch.long)
        for start in range(0, len(order_idx), batch_size):
            idx = order_idx[start:start + batch_size]
            logits = F.linear(x[idx], weight, bias)
            loss = F.cross_entropy(logits, y[idx], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(dim=1) == y[idx]).sum()
        record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / len(order_idx),
                  "train_acc": int(correct) / len(order_idx)}
        if test is not None:
            hits = _correct(weight.detach(), bias.detach(), *test)
            record["test_acc"] = int(hits.sum()) / len(hits)
            if best_correct is None or record["test_acc"] > max(r["test_acc"] for r in history):
                best_correct = hits.cpu().numpy()
        history.append(record)
    accs = [r["test_acc"] for r in history if "test_acc" in r]
    return ProbeResult(weight.detach().cpu(), bias.detach().cpu(), accs[-1] if accs else None,
                       max(accs) if accs else None, history, "adamw", best_correct=best_correct)


def _fit_lbfgs(x, y, l2: float, weight: torch.Tensor, bias: torch.Tensor, max_iter: int, tol: float):
    """Minimize mean CE + l2/2 ||W||^2 from (weight, bias); returns the solution and the objective."""
    weight = weight.clone().requires_grad_()
    bias = bias.clone().requires_grad_()
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=tol * 1e-3, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        return F.cross_entropy(F.linear(x, weight, bias), y) + 0.5 * l2 * weight.square().sum()

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        final = float(objective())
    return weight.detach(), bias.detach(), final


def _train_lbfgs(x, y, num_classes, test, *, l2_grid, val_fraction, seed, max_iter, tol,
                 show_progress) -> ProbeResult:
    from data.splits import stratified_split

    if not l2_grid or min(l2_grid) < 0:
        raise ValueError(f"l2_grid must be a non-empty sequence of penalties >= 0, got {l2_grid!r}")
    train_idx, val_idx = (torch.from_numpy(i).to(x.device)
                          for i in stratified_split(y.cpu().numpy(), val_fraction, seed))
    if len(val_idx) == 0:
        raise ValueError("the L-BFGS probe needs >= 2 training samples in some class to hold out a validation split")
    xt, yt, xv, yv = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    weight = torch.zeros(num_classes, x.shape[1], device=x.device)
    bias = torch.zeros(num_classes, device=x.device)
    history: list[dict] = []
    best = None
    for l2 in progress(sorted(l2_grid, reverse=True), show=show_progress, desc="l2 grid", leave=False):
        weight, bias, objective = _fit_lbfgs(xt, yt, l2, weight, bias, max_iter, tol)
        record = {"l2": l2, "train_objective": objective, "val_acc": _accuracy(weight, bias, xv, yv)}
        history.append(record)
        if best is None or record["val_acc"] > best[0]["val_acc"]:
            best = (record, weight, bias)
    chosen, weight, bias = best
    weight, bias, _ = _fit_lbfgs(x, y, chosen["l2"], weight, bias, max_iter, tol)
    hits = _correct(weight, bias, *test) if test is not None else None
    acc = int(hits.sum()) / len(hits) if hits is not None else None
    return ProbeResult(weight.cpu(), bias.cpu(), acc, acc, history, "lbfgs", l2=chosen["l2"],
                       best_correct=None if hits is None else hits.cpu().numpy())


def train_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, *,
                test_x: torch.Tensor | None = None, test_y: torch.Tensor | None = None, solver: str = "adamw",
                recipe: str = "cnn", epochs: int = 30, lr: float | None = None, weight_decay: float | None = None,
                batch_size: int | None = None, label_smoothing: float = 0.1, seed: int = 0,
                device: str | torch.device | None = None,
                show_progress: bool = False, l2_grid=L2_GRID, val_fraction: float = 0.2, max_iter: int = 1000,
                tol: float = 1e-6, order: str = "shuffle") -> ProbeResult:
    """Train a linear probe on frozen features (see the module doc for both solvers).

    ``device`` None: CUDA when present, else the features' device; the features are copied there
    in float32. ``recipe`` (``'cnn'`` | ``'vit'``, :data:`PROBE_RECIPES`), ``epochs``, ``lr``,
    ``weight_decay``, ``batch_size`` (None: the recipe's), ``label_smoothing`` and ``order``
    (``'shuffle'`` | ``'fixed'``, :data:`ORDERS`) apply to adamw; ``l2_grid``, ``val_fraction``,
    ``max_iter`` (L-BFGS iterations per fit) and ``tol`` (gradient tolerance) to lbfgs. ``seed`` fixes
    the initialization and shuffling (adamw) or the validation split (lbfgs).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown probe solver {solver!r}; use one of {', '.join(SOLVERS)}")
    if recipe not in PROBE_RECIPES:
        raise ValueError(f"unknown probe recipe {recipe!r}; use one of {', '.join(PROBE_RECIPES)}")
    if order not in ORDERS:
        raise ValueError(f"unknown probe order {order!r}; use one of {', '.join(ORDERS)}")
    chosen = PROBE_RECIPES[recipe]
    lr = chosen.lr if lr is None else lr
    weight_decay = chosen.weight_decay if weight_decay is None else weight_decay
    batch_size = chosen.batch_size if batch_size is None else batch_size
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if (test_x is None) != (test_y is None):
        raise ValueError("pass both test_x and test_y, or neither")
    if solver == "adamw" and (epochs < 1 or batch_size < 1):
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else train_x.device
    device = torch.device(device)
    x, y = _checked(train_x, train_y, num_classes, "train", device)
    test = None
    if test_x is not None:
        test = _checked(test_x, test_y, num_classes, "test", device)
        if test[0].shape[1] != x.shape[1]:
            raise ValueError(f"train features have {x.shape[1]} dims but test features {test[0].shape[1]}; "
                             f"use features of the same layer")
    if solver == "adamw":
        return _train_adamw(x, y, num_classes, test, epochs=epochs, lr=lr, weight_decay=weight_decay,
                            batch_size=batch_size, label_smoothing=label_smoothing, seed=seed,
                            show_progress=show_progress, init=chosen.init, repeats=chosen.repeats, order=order)
    return _train_lbfgs(x, y, num_classes, test, l2_grid=tuple(l2_grid), val_fraction=val_fraction, seed=seed,
                        max_iter=max_iter, tol=tol, show_progress=show_progress)


__all__ = ["L2_GRID", "ORDERS", "PROBE_RECIPES", "ProbeRecipe", "ProbeResult", "probe_logits", "train_probe"]
