"""Shared fixtures: tiny (untrained) checkpoints of a baseline and an NC-controlled ResNet-18."""
import pytest
import torch

from engine.checkpoint import save_checkpoint
from models import build_model

TINY_NC = {"output_dim": 64, "hidden_mlp": 256}


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory):
    """{'base': path, 'ours': path}: width-0.125 CIFAR-stem ResNet-18s for 6 classes at 16 px."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_ckpts")
    out = {}
    for name, nc in (("base", None), ("ours", TINY_NC)):
        model = build_model("resnet18", 6, nc_control=nc, stem="cifar", width=0.125, img_size=16)
        out[name] = save_checkpoint(folder / f"{name}.pth", model=model, epoch=1, config={})
    return out
