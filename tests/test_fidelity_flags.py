"""Switches that reproduce official behaviours listed in docs/FIDELITY.md: the probe's fixed epoch
order, the ViT probe's step counts on the small transfer sets, and float32 pretraining."""
import math

import pytest
import torch

from evaluate.probe import ORDERS, _epoch_orders, _epoch_order, train_probe

pytestmark = pytest.mark.usefixtures("one_thread")


def clusters(n_per_class: int, classes: int = 4, dim: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centers = 3.0 * torch.randn(classes, dim, generator=gen)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return centers[y] + torch.randn(len(y), dim, generator=gen), y


@pytest.mark.parametrize("repeats", [1, 3])
def test_a_fixed_order_repeats_the_first_epochs_order_and_shuffle_redraws_it(repeats):
    fixed = _epoch_orders(600, repeats, torch.Generator().manual_seed(5), "fixed")
    shuffled = _epoch_orders(600, repeats, torch.Generator().manual_seed(5), "shuffle")
    f = [next(fixed) for _ in range(3)]
    s = [next(shuffled) for _ in range(3)]
    assert torch.equal(f[0], s[0])  # the first epoch is the same either way
    assert torch.equal(f[0], f[1]) and torch.equal(f[0], f[2])
    assert not torch.equal(s[0], s[1]) and not torch.equal(s[1], s[2])
    assert len(f[0]) == (600 if repeats == 1 else 600 // 256 * 256)


def test_the_probe_takes_a_fixed_order_which_changes_training_only_after_the_first_epoch():
    x, y = clusters(50)
    kwargs = dict(batch_size=32, seed=1, device="cpu")
    one = [train_probe(x, y, 4, epochs=1, order=o, **kwargs) for o in ORDERS]
    assert torch.equal(one[0].weight, one[1].weight) and one[0].history == one[1].history
    default, shuffled, fixed = (train_probe(x, y, 4, epochs=3, **kwargs, **o)
                                for o in ({}, {"order": "shuffle"}, {"order": "fixed"}))
    assert torch.equal(default.weight, shuffled.weight)  # shuffle is the default
    assert not torch.equal(fixed.weight, shuffled.weight)
    assert torch.equal(fixed.weight, train_probe(x, y, 4, epochs=3, order="fixed", **kwargs).weight)
    with pytest.raises(ValueError, match="unknown probe order 'sorted'") as info:
        train_probe(x, y, 4, order="sorted", device="cpu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, n_train, steps", [
    ("Flowers-102 train", 1020, 1), ("Oxford-IIIT Pets trainval", 3680, 2), ("CUB-200 train", 5994, 3),
])
def test_the_vit_probe_recipe_takes_few_steps_on_the_small_transfer_sets(name, n_train, steps):
    """The figures of docs/FIDELITY.md: timm's RepeatAugSampler keeps n // 256 * 256 positions (each
    distinct sample 3 times), and the probe steps once per 2048 of them."""
    kept = len(_epoch_order(n_train, 3, torch.Generator().manual_seed(0)))
    assert kept == n_train // 256 * 256
    assert math.ceil(kept / 2048) == steps, name
    assert len(set(_epoch_order(n_train, 3, torch.Generator().manual_seed(0)).tolist())) == math.ceil(kept / 3)
