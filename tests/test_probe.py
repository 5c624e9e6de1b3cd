"""Linear probes: the AdamW recipe and the L-BFGS logistic regression on synthetic features."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from evaluate.probe import L2_GRID, ProbeResult, probe_logits, train_probe


def gaussian_clusters(n_per_class: int, seed: int, classes: int = 5, dim: int = 32, spread: float = 0.5):
    """Class c ~ N(4 * u_c, spread^2 I) with fixed unit directions u_c: separated by a wide margin."""
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234))
    centers = 4.0 * centers / centers.norm(dim=1, keepdim=True)
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centers[y] + spread * torch.randn(len(y), dim, generator=gen)
    return x, y


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def separable():
    train_x, train_y = gaussian_clusters(60, seed=0)
    test_x, test_y = gaussian_clusters(40, seed=1)
    return train_x, train_y, test_x, test_y


def test_adamw_probe_separates_clusters_and_is_seeded(separable):
    train_x, train_y, test_x, test_y = separable
    kwargs = dict(test_x=test_x, test_y=test_y, epochs=8, batch_size=64, seed=3, device="cpu")
    res = train_probe(train_x, train_y, 5, **kwargs)
    assert isinstance(res, ProbeResult) and res.solver == "adamw" and res.l2 is None
    assert res.weight.shape == (5, 32) and res.bias.shape == (5,)
    assert res.best_acc >= 0.95 and res.best_acc >= res.final_acc
    assert len(res.history) == 8 and [r["epoch"] for r in res.history] == list(range(1, 9))
    assert res.best_acc == max(r["test_acc"] for r in res.history)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    # the stored probe reproduces the reported accuracy
    acc = (probe_logits(res, test_x).argmax(dim=1) == test_y).float().mean().item()
    assert acc == pytest.approx(res.final_acc)

    again = train_probe(train_x, train_y, 5, **kwargs)
    assert torch.equal(again.weight, res.weight) and torch.equal(again.bias, res.bias)
    assert again.history == res.history
    other = train_probe(train_x, train_y, 5, **{**kwargs, "seed": 4, "epochs": 1})
    assert not torch.equal(other.weight, train_probe(train_x, train_y, 5, **{**kwargs, "epochs": 1}).weight)


def test_adamw_probe_starts_from_the_official_initialization():
    x, y = gaussian_clusters(400, seed=0, classes=4, dim=64)
    res = train_probe(x, y, 4, lr=0.0, epochs=1, device="cpu")  # lr 0: the probe keeps its initial values
    assert torch.count_nonzero(res.bias) == 0
    assert res.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert abs(res.weight.mean().item()) < 0.002
    assert res.final_acc is None and res.best_acc is None and "test_acc" not in res.history[0]


def test_lbfgs_probe_separates_clusters_and_is_seeded(separable):
    train_x, train_y, test_x, test_y = separable
    grid = (1e-4, 1e-2, 1.0)
    res = train_probe(train_x, train_y, 5, test_x=test_x, test_y=test_y, solver="lbfgs", l2_grid=grid,
                      max_iter=200, device="cpu")
    assert res.solver == "lbfgs" and res.l2 in grid
    assert res.best_acc >= 0.95 and res.best_acc >= res.final_acc
    assert [r["l2"] for r in res.history] == sorted(grid, reverse=True)
    assert all(0.0 <= r["val_acc"] <= 1.0 for r in res.history)
    assert max(r["val_acc"] for r in res.history) == next(r["val_acc"] for r in res.history if r["l2"] == res.l2)
    again = train_probe(train_x, train_y, 5, test_x=test_x, test_y=test_y, solver="lbfgs", l2_grid=grid,
                        max_iter=200, device="cpu")
    assert torch.equal(again.weight, res.weight) and again.l2 == res.l2 and again.history == res.history
    assert len(L2_GRID) == 15 and L2_GRID[0] == pytest.approx(1e-6) and L2_GRID[-1] == pytest.approx(10.0)


def test_lbfgs_minimizes_mean_ce_plus_half_l2_like_sklearn():
    """One penalty in the grid: the refit on all features solves mean CE + l2/2 ||W||^2, which is
    sklearn's C * sum CE + 1/2 ||W||^2 with C = 1 / (l2 N) (intercept unpenalized)."""
    x, y = gaussian_clusters(50, seed=5, classes=3, dim=8, spread=3.0)  # overlapping classes
    l2 = 0.05
    res = train_probe(x, y, 3, solver="lbfgs", l2_grid=[l2], max_iter=500, tol=1e-9, device="cpu")
    assert res.l2 == l2
    ref = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-10, max_iter=5000).fit(x.double().numpy(), y.numpy())
    # multinomial logits are defined up to a per-sample constant: compare centred weights and biases
    w = res.weight.double().numpy()
    b = res.bias.double().numpy()
    np.testing.assert_allclose(w - w.mean(0), ref.coef_ - ref.coef_.mean(0), atol=2e-3)
    np.testing.assert_allclose(b - b.mean(), ref.intercept_ - ref.intercept_.mean(), atol=2e-3)
    # and it is a stationary point of the stated objective
    weight = res.weight.clone().requires_grad_()
    bias = res.bias.clone().requires_grad_()
    loss = F.cross_entropy(F.linear(x, weight, bias), y) + 0.5 * l2 * weight.square().sum()
    loss.backward()
    assert weight.grad.abs().max() < 1e-3 and bias.grad.abs().max() < 1e-3


@pytest.mark.parametrize("args, kwargs, message", [
    ((torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 3), {}, "non-empty"),
    ((torch.zeros(5, 4), torch.tensor([0, 1, 2, 3, 0]), 3), {}, r"\[0, 2\]"),
    ((torch.zeros(5, 4), torch.tensor([0, 1, -1, 1, 0]), 3), {}, r"\[0, 2\]"),
    ((torch.zeros(5, 4), torch.zeros(4, dtype=torch.long), 3), {}, "5 feature rows"),
    ((torch.zeros(5, 4), torch.zeros(5), 3), {}, "integer class ids"),
    ((torch.zeros(5, 4), torch.zeros(5, dtype=torch.long), 3), {"test_x": torch.zeros(2, 4)}, "both test_x"),
    ((torch.zeros(5, 4), torch.zeros(5, dtype=torch.long), 3),
     {"test_x": torch.zeros(2, 3), "test_y": torch.zeros(2, dtype=torch.long)}, "same layer"),
    ((torch.full((5, 4), float("nan")), torch.zeros(5, dtype=torch.long), 3), {}, "NaN"),
    ((torch.zeros(5, 4), torch.zeros(5, dtype=torch.long), 3), {"solver": "sgd"}, "unknown probe solver"),
])
def test_probe_rejects_bad_inputs_with_one_line(args, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        train_probe(*args, device="cpu", **kwargs)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- the ViT probe recipe

def test_cnn_recipe_is_the_default_and_explicit_values_override_a_recipe(separable):
    train_x, train_y, test_x, test_y = separable
    kwargs = dict(test_x=test_x, test_y=test_y, epochs=3, seed=0, device="cpu")
    default = train_probe(train_x, train_y, 5, **kwargs)
    explicit = train_probe(train_x, train_y, 5, recipe="cnn", lr=1e-3, weight_decay=0.0, batch_size=256, **kwargs)
    assert torch.equal(default.weight, explicit.weight) and default.history == explicit.history
    overridden = train_probe(train_x, train_y, 5, recipe="vit", lr=1e-3, weight_decay=0.0, batch_size=256, **kwargs)
    assert not torch.equal(overridden.weight, default.weight)  # same numbers, the ViT init and sampler
    with pytest.raises(ValueError, match="unknown probe recipe"):
        train_probe(train_x, train_y, 5, recipe="deit")


def test_vit_recipe_starts_from_the_official_vit_probe_initialization():
    x, y = gaussian_clusters(400, seed=0, classes=4, dim=64)
    res = train_probe(x, y, 4, recipe="vit", lr=0.0, epochs=1, device="cpu")
    assert res.weight.std().item() == pytest.approx(0.01, rel=0.1) and res.weight.abs().max() < 0.05
    bound = 1 / 64 ** 0.5  # nn.Linear's default bias: U(-1/sqrt(D), 1/sqrt(D))
    assert res.bias.abs().max() <= bound and res.bias.abs().max() > bound / 4


def test_vit_recipe_draws_each_sample_three_times_per_epoch_in_2048_sample_steps():
    x, y = gaussian_clusters(130, seed=0)  # 650 samples -> 650 // 256 * 256 = 512 positions per epoch
    res = train_probe(x, y, 5, recipe="vit", epochs=2, device="cpu")
    assert all(r["train_acc"] * 512 == pytest.approx(round(r["train_acc"] * 512)) for r in res.history)
    from evaluate.probe import _epoch_order

    order = _epoch_order(650, 3, torch.Generator().manual_seed(0)).tolist()
    assert len(order) == 512 and all(order[i] == order[i + 1] == order[i + 2] for i in range(0, 510, 3))
    assert len(_epoch_order(100, 3, torch.Generator().manual_seed(0))) == 100  # under 256 samples: one pass
    # the official 4-GPU probe: rank r's k-th batch of 512 = every 4th position from r in the shared list,
    # so the four batches of a step are the 2048 consecutive positions one process takes
    from timm.data.distributed_sampler import RepeatAugSampler

    n = 5000
    ranks = []
    for r in range(4):
        sampler = RepeatAugSampler(range(n), num_replicas=4, rank=r, num_repeats=3)
        sampler.set_epoch(7)
        ranks.append(list(sampler))
    single = RepeatAugSampler(range(n), num_replicas=1, rank=0, num_repeats=3)
    single.set_epoch(7)
    single = list(single)
    assert len(single) == sum(len(r) for r in ranks) == 4864
    for k in range(0, len(ranks[0]), 512):
        step = sorted(i for r in ranks for i in r[k:k + 512])
        assert step == sorted(single[4 * k:4 * k + 2048])


@pytest.mark.parametrize("script, recipe", [("train_lp_vit.sh", "vit"), ("ood_det_vit_nc.sh", "vit"),
                                            ("nc_eval_vit.sh", "vit"), ("train_lp_resnet_nc.sh", "cnn"),
                                            ("ood_det_vgg.sh", "cnn"), ("nc_eval_resnet.sh", "cnn")])
def test_paper_scripts_probe_with_their_architectures_recipe(script, recipe):
    import os
    import shlex
    import subprocess
    from pathlib import Path

    from core.config import parse_config
    from evaluate.nc import NC_DEFAULTS, NC_TYPES
    from evaluate.ood import OOD_DEFAULTS, OOD_TYPES
    from evaluate.transfer import TRANSFER_DEFAULTS, TRANSFER_TYPES

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBE") and k not in ("ARCH", "EXPT_NAME")}
    out = subprocess.run(["bash", str(root / "scripts" / script)], env={**env, "DRY_RUN": "1"}, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    cmd = shlex.split(out)
    entry = next(i for i, a in enumerate(cmd) if a.endswith(".py"))
    defaults, types = {"train_lp.py": (TRANSFER_DEFAULTS, TRANSFER_TYPES), "eval_ood.py": (OOD_DEFAULTS, OOD_TYPES),
                       "eval_nc.py": (NC_DEFAULTS, NC_TYPES)}[Path(cmd[entry]).name]
    cfg = parse_config(defaults, cmd[entry + 1:], types=types)
    assert cfg.probe_recipe == recipe and (cfg.probe_lr, cfg.probe_batch_size, cfg.probe_wd) == (None, None, None)


def test_unknown_probe_recipe_is_a_clear_error_before_any_extraction(tiny_ckpts):
    from argparse import Namespace

    from core.errors import UserError
    from evaluate.runs import open_runs

    with pytest.raises(UserError, match="--probe_recipe must be one of cnn, vit"):
        open_runs(Namespace(ckpt=[str(tiny_ckpts["base"])], names=[], probe_recipe="deit"))
