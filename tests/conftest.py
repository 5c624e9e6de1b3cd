"""Shared fixtures: one intra-op thread for tests on tiny tensors, and tiny (untrained)
checkpoints of a baseline and an NC-controlled ResNet-18."""
import pytest
import torch

from core.checkpoint import save_checkpoint
from models import build_model

TINY_NC = {"output_dim": 64, "hidden_mlp": 256}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread hand-off costs on a shared CPU
    (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
