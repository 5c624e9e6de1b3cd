"""The training recipes of train.recipes: the official ViT recipe (batch-scaled lr, timm's parameter
groups, timm's cosine schedule, repeated augmentation) beside the official CNN recipe (the defaults),
and an exact resume of a tiny ViT trained with the ViT recipe."""
import json
import math
from pathlib import Path

import pytest
import torch

import pretrain
from train import loop as trainer
from core.checkpoint import load_checkpoint
from core.config import parse_config
from core.errors import UserError
from train.recipes import (build_optimizer, build_scheduler, check_recipe, drop_last_batch, learning_rate,
                            step_scheduler, train_sampler)
from train.options import PRETRAIN_ALIASES, PRETRAIN_DEFAULTS, PRETRAIN_TYPES
from models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")
VIT_RECIPE = ["--schedule", "cosine_timm", "--no-wd_norm_bias", "--repeated_aug", "3", "--lr_base_batch", "512",
              "--entropy_batch", "local"]


def config(*argv):
    cfg = parse_config(PRETRAIN_DEFAULTS, list(argv), types=PRETRAIN_TYPES, aliases=PRETRAIN_ALIASES)
    check_recipe(cfg)
    return cfg


def epoch_lrs(cfg, model=None):
    optimizer = build_optimizer(model or torch.nn.Linear(3, 2), cfg)
    scheduler = build_scheduler(optimizer, cfg)
    lrs = []
    for epoch in range(cfg.epochs):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        step_scheduler(scheduler, epoch + 1, cfg)
    return lrs


def test_lr_base_batch_scales_the_lr_by_the_global_batch_as_the_official_vit_code():
    # the official ViT-T: lr 8e-4 at 256 images per GPU x 4 GPUs, scaled by 1024 / 512
    cfg = config("--lr", "8e-4", "--lr_base_batch", "512", "-b", "1024")
    assert learning_rate(cfg) == pytest.approx(1.6e-3)
    assert build_optimizer(torch.nn.Linear(3, 2), cfg).param_groups[0]["lr"] == pytest.approx(1.6e-3)
    assert learning_rate(config("--lr", "4e-4", "--lr_base_batch", "512", "-b", "1024")) == pytest.approx(8e-4)
    assert learning_rate(config("--lr", "8e-4", "-b", "1024")) == 8e-4  # default: --lr as given


def test_timm_parameter_groups_leave_biases_and_1d_parameters_undecayed():
    model = build_model("vit_tiny", 5, nc_control={"output_dim": 192, "hidden_mlp": 768}, img_size=16, patch_size=8)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = build_optimizer(model, config("--no-wd_norm_bias", "--wd", "0.05")).param_groups
    assert [g["weight_decay"] for g in groups] == [0.0, 0.05]
    no_decay, decay = ({names[id(p)] for p in g["params"]} for g in groups)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert no_decay | decay == trainable and not no_decay & decay
    assert no_decay == {n for n, p in model.named_parameters() if p.requires_grad and (p.ndim <= 1 or n.endswith(".bias"))}
    assert "classifier.bias" in no_decay and "encoder.vit.blocks.0.norm1.weight" in no_decay
    assert "classifier.weight" in decay and "encoder.vit.blocks.0.attn.qkv.weight" in decay
    assert not any(n.startswith("projector") for n in trainable)  # the fixed ETF weights have no group
    (group,) = build_optimizer(model, config("--wd", "0.05")).param_groups  # the CNN default: decay on all
    assert group["weight_decay"] == 0.05 and {names[id(p)] for p in group["params"]} == trainable


def official_vit_lr(t, lr, epochs, warmup, warmup_lr=1e-6, min_lr=1e-5):
    """The rate of epoch index t in timm's create_scheduler('cosine') as the official code sets it up."""
    if t < warmup:
        return warmup_lr + t * (lr - warmup_lr) / warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / epochs))


def test_cosine_timm_follows_the_official_vit_schedule_per_epoch():
    cfg = config("--schedule", "cosine_timm", "--lr", "1e-3", "--epochs", "10", "--warmup_epochs", "3",
                 "--no-wd_norm_bias")
    lrs = epoch_lrs(cfg, torch.nn.Linear(3, 2))  # two groups (weight, bias), one rate
    assert all(a == b for a, b in lrs)
    assert [a for a, _ in lrs] == pytest.approx([official_vit_lr(t, 1e-3, 10, 3) for t in range(10)], rel=1e-12)
    assert lrs[0][0] == 1e-6
    lagged = epoch_lrs(config("--schedule", "cosine_timm", "--lr", "1e-3", "--epochs", "10", "--warmup_epochs", "3",
                              "--schedule_lag"))
    # the official loop steps with the finished epoch's index: epoch t >= 1 runs at the rate of t - 1
    assert [a for a, in lagged] == pytest.approx([official_vit_lr(max(t - 1, 0), 1e-3, 10, 3) for t in range(10)])


def test_cosine_default_stays_the_official_cnn_schedule():
    lrs = [a for a, in epoch_lrs(config("--lr", "0.01", "--epochs", "10", "--warmup_epochs", "5"))]
    assert lrs[:5] == pytest.approx([0.01 * (0.01 + 0.99 * t / 5) for t in range(5)])
    assert lrs[5:] == pytest.approx([0.005 * (1 + math.cos(math.pi * t / 5)) for t in range(5)])


class Indexed:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def test_repeated_augmentation_sampler_in_one_and_two_processes():
    cfg = config("--repeated_aug", "3")
    one = list(train_sampler(cfg, Indexed(300), 0, 1, epoch=0, seed=11))
    assert len(one) == 256  # 300 // 256 * 256 positions per epoch
    assert all(one[i] == one[i + 1] == one[i + 2] for i in range(0, 255, 3))  # each image three times in a row
    assert one == list(train_sampler(cfg, Indexed(300), 0, 1, epoch=5, seed=11))  # drawn from the seed given
    assert one != list(train_sampler(cfg, Indexed(300), 0, 1, epoch=0, seed=12))
    ranks = [list(train_sampler(cfg, Indexed(300), r, 4, epoch=0, seed=11)) for r in range(4)]
    assert [len(r) for r in ranks] == [64] * 4
    for r in ranks:  # with at least 3 processes the 3 copies of an image go to 3 different ones
        assert len(set(r)) == len(r)
    assert train_sampler(config(), Indexed(300), 0, 1, epoch=0, seed=11) is None  # the CNN default: shuffle
    ddp = train_sampler(config(), Indexed(300), 1, 2, epoch=3, seed=11)
    assert type(ddp).__name__ == "DistributedSampler" and len(ddp) == 150


def test_last_batch_is_kept_unless_asked_or_a_single_sample():
    assert not drop_last_batch(config(), 300, 128) and drop_last_batch(config("--drop_last"), 300, 128)
    assert drop_last_batch(config(), 257, 128) and not drop_last_batch(config(), 256, 128)


@pytest.mark.parametrize("argv, match", [
    (["--min_lr", "0"], "cosine_timm only"),
    (["--schedule_lag"], "cosine_timm only"),
    (["--repeated_aug", "0"], "--repeated_aug"),
    (["--lr_base_batch", "-1"], "--lr_base_batch"),
    (["--entropy_batch", "all"], "--entropy_batch must be one of"),
    (["--schedule", "linear"], "--schedule must be one of"),
])
def test_recipe_mistakes_are_clear_errors(argv, match):
    with pytest.raises(UserError, match=match):
        config(*argv)


TINY_VIT = ["--dataset", "fashion_mnist", "--classes", "0", "1", "2", "3", "--num_classes", "4", "--max_per_class",
            "24", "--image_size", "16", "--patch_size", "8", "--arch", "vit_tiny", "-b", "16", "--workers", "0",
            "--lr", "4e-3", "--epochs", "3", "--warmup_epochs", "1", "--drop_path", "0.1", "--device", "cpu",
            "--alpha", "0.05", "--output_dim", "192", "--hidden_mlp", "768", "--augmentation", *VIT_RECIPE]


def test_vit_recipe_resumes_exactly(tmp_path, monkeypatch):
    full = tmp_path / "full"
    pretrain.main([*TINY_VIT, "--save_dir", str(full)])
    records = [json.loads(line) for line in (full / "model.log.jsonl").read_text().splitlines()]
    base = 4e-3 * 16 / 512
    assert [r["lr"] for r in records] == pytest.approx([official_vit_lr(t, base, 3, 1) for t in range(3)])

    calls = {"n": 0}
    evaluate = trainer.evaluate

    def stop_in_epoch_two(*args, **kwargs):  # an interruption after the first epoch's checkpoint
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    cut = tmp_path / "cut"
    monkeypatch.setattr(trainer, "evaluate", stop_in_epoch_two)
    with pytest.raises(SystemExit):  # the entry point turns the interruption into exit code 130
        pretrain.main([*TINY_VIT, "--save_dir", str(cut)])
    monkeypatch.setattr(trainer, "evaluate", evaluate)
    assert load_checkpoint(cut / "model.pth")["epoch"] == 1
    pretrain.main([*TINY_VIT, "--save_dir", str(cut), "--resume", str(cut / "model.pth")])
    a, b = load_checkpoint(full / "model.pth"), load_checkpoint(cut / "model.pth")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["scheduler"] == b["scheduler"]
    resumed = [json.loads(line) for line in (cut / "model.log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in resumed] == [r["lr"] for r in records]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in records]
    assert Path(cut / "model.config.yaml").is_file()


@pytest.mark.parametrize("arch, lr", [("vit_tiny", 1.6e-3), ("vit_small", 8e-4)])
def test_vit_scripts_train_at_the_papers_batch_scaled_lr_with_the_vit_recipe(arch, lr):
    import os
    import shlex
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("NPROC", "BS", "LR_BASE", "EXPT_NAME")}
    for script in ("pretrain_vit.sh", "pretrain_vit_nc.sh"):
        out = subprocess.run(["bash", str(root / "scripts" / script)], env={**env, "ARCH": arch, "DRY_RUN": "1"},
                             capture_output=True, text=True, timeout=60, check=True).stdout
        cmd = shlex.split(out)
        cfg = config(*cmd[[i for i, a in enumerate(cmd) if a.endswith("pretrain.py")][0] + 1:])
        assert "--nproc_per_node=4" in cmd and cfg.batch_size == 1024 and learning_rate(cfg) == pytest.approx(lr)
        assert (cfg.schedule, cfg.warmup_epochs, cfg.warmup_lr, cfg.min_lr) == ("cosine_timm", 5, 1e-6, 1e-5)
        assert (cfg.wd_norm_bias, cfg.repeated_aug, cfg.entropy_batch, cfg.drop_path) == (False, 3, "local", 0.1)
