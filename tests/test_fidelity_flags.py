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


# --------------------------------------------------------------------------- float32 pretraining

TINY = ["--dataset", "digits", "--classes", "0", "1", "2", "--num_classes", "3", "--max_per_class", "12",
        "--image_size", "16", "--arch", "resnet18", "--stem", "cifar", "--width", "0.125", "-b", "16",
        "--workers", "0", "--epochs", "1", "--device", "cpu"]


def test_precision_chooses_autocast_on_cuda_only():
    from core.errors import UserError
    from train.loop import autocast_enabled

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert autocast_enabled(cuda) and autocast_enabled(cuda, "bfloat16")
    assert not autocast_enabled(cuda, "float32")
    assert not autocast_enabled(cpu, "bfloat16") and not autocast_enabled(cpu, "float32")
    with pytest.raises(UserError, match="--precision must be one of bfloat16, float32, got 'fp16'"):
        autocast_enabled(cpu, "fp16")


def test_the_precision_flag_reaches_training_and_validation_and_changes_nothing_on_the_cpu(tmp_path, monkeypatch):
    import pretrain
    import train.loop as loop
    from core.checkpoint import load_checkpoint

    seen = []
    real = loop.autocast_enabled
    monkeypatch.setattr(loop, "autocast_enabled", lambda device, precision="bfloat16": seen.append(precision)
                        or real(device, precision))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    pretrain.main(TINY + ["--save_dir", str(tmp_path / "fp32"), "--precision", "float32"])
    # the start-up check, then each training step and each validation batch
    assert len(seen) > 3 and set(seen) == {"float32"}
    seen.clear()
    pretrain.main(TINY + ["--save_dir", str(tmp_path / "bf16")])
    assert len(seen) > 3 and set(seen) == {"bfloat16"}  # the default
    fp32, bf16 = (load_checkpoint(tmp_path / d / "model.pth")["state_dict"] for d in ("fp32", "bf16"))
    assert all(torch.equal(fp32[k], bf16[k]) for k in bf16)


def test_a_bad_precision_is_one_line_before_any_file_is_written(tmp_path, capsys):
    import pretrain

    with pytest.raises(SystemExit) as info:
        pretrain.main(TINY + ["--save_dir", str(tmp_path), "--precision", "half"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --precision must be one of bfloat16, float32")
    assert not any(tmp_path.iterdir())
