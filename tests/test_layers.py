"""Layer addressing: the named hook points of the official evaluation (``last_conv``,
``projector_raw``) checked against their formulas, dotted module paths through the same
mechanism, and their place in the feature cache and the evaluators."""
from __future__ import annotations

from argparse import Namespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import models
from core.checkpoint import save_checkpoint
from core.errors import UserError
from evaluate.runs import open_runs, resolve_layers as eval_layers
from features import describe_layers, extract, get_features, resolve_layers
from models.layers import WS_EPS

PX, CLASSES, WIDTH = 32, 5, 0.125
NC = dict(output_dim=64, hidden_mlp=256)

pytestmark = pytest.mark.usefixtures("one_thread")


def loader(n: int = 6, px: int = PX, seed: int = 0) -> DataLoader:
    x = torch.randn(n, 3, px, px, generator=torch.Generator().manual_seed(seed))
    return DataLoader(TensorDataset(x, torch.arange(n) % CLASSES), batch_size=4)


def randomized(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random norm affines and BatchNorm statistics, so no norm is the identity (the GN+WS
    residual norms start at zero) and a wrong hook point cannot agree by accident."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=g)
            m.bias.data = 0.2 * torch.randn(m.bias.shape, generator=g)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = 0.1 * torch.randn(m.running_mean.shape, generator=g)
            m.running_var = 0.5 + torch.rand(m.running_var.shape, generator=g)
    return model.eval()


def conv_by_hand(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """3x3 'same' convolution of ``x``; a weight-standardized conv uses (W - mean) / (std + 1e-5)
    per output filter (unbiased std)."""
    w = conv.weight
    if isinstance(conv, models.layers.WSConv2d):
        flat = w.reshape(w.shape[0], -1)
        w = (w - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + WS_EPS)
    return F.conv2d(x, w, conv.bias, stride=conv.stride, padding=1)


def norm_by_hand(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(norm, nn.BatchNorm2d):  # eval mode: running statistics
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        return (x - norm.running_mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
    b, c, h, w = x.shape
    g = x.reshape(b, norm.num_groups, -1)
    g = (g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + norm.eps)
    return g.reshape(b, c, h, w) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)


def input_of(module: nn.Module, model: nn.Module, batches: DataLoader) -> torch.Tensor:
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    handle.remove()
    return torch.cat(seen)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
@pytest.mark.parametrize("norm", ["bn", "gn_ws"])
def test_resnet_last_conv_is_the_pooled_conv2_output_of_the_last_block(arch, norm):
    torch.manual_seed(0)
    model = randomized(models.build_model(arch, CLASSES, nc_control=NC, norm=norm, stem="cifar", width=WIDTH))
    block = model.encoder.layer4[-1]
    batches = loader()
    x = input_of(block, model, batches)
    with torch.no_grad():  # the block's first half, then its second conv; no norm2, no shortcut, no ReLU
        h = F.relu(norm_by_hand(block.norm1, conv_by_hand(block.conv1, x)))
        expected = conv_by_hand(block.conv2, h).mean(dim=(2, 3))
    out = extract(model, batches, ["last_conv", "encoder"], device="cpu", show_progress=False)
    torch.testing.assert_close(out.features["last_conv"], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out.features["last_conv"], out.features["encoder"], atol=1e-2)
    path = {"resnet18": "encoder.layer4.1.conv2", "resnet34": "encoder.layer4.2.conv2"}[arch]  # the official names
    assert describe_layers(model, ["last_conv"]) == {"last_conv": path}


@pytest.mark.parametrize("norm", ["bn", "gn_ws"])
def test_vgg_last_conv_is_the_pooled_16th_conv_official_features_49(norm):
    torch.manual_seed(0)
    model = randomized(models.build_model("vgg17", CLASSES, nc_control=NC, norm=norm, width=WIDTH))
    block5 = model.encoder.block5
    batches = loader()
    x = input_of(block5, model, batches)
    with torch.no_grad():  # three conv -> norm -> ReLU layers, then the fourth conv alone
        for i in (0, 3, 6):
            x = F.relu(norm_by_hand(block5[i + 1], conv_by_hand(block5[i], x)))
        expected = conv_by_hand(block5[9], x).mean(dim=(2, 3))
    out = extract(model, batches, ["last_conv"], device="cpu", show_progress=False)
    torch.testing.assert_close(out.features["last_conv"], expected, rtol=1e-4, atol=1e-5)
    # The official VGG keeps the same modules in one flat list: 3 per conv layer, 1 per max-pool.
    flat = [m for block in model.encoder.stages().values() for m in block]
    assert flat.index(model.named_layers()["last_conv"]) == 49
    assert sum(isinstance(m, nn.Conv2d) for m in flat[:50]) == 16


@pytest.mark.parametrize("arch, kwargs", [("resnet18", dict(stem="cifar", width=WIDTH)),
                                          ("vit_tiny", dict(img_size=PX, patch_size=8))])
def test_projector_raw_is_the_projector_before_l2_and_projector_after(arch, kwargs):
    torch.manual_seed(0)
    dim = 64 if arch == "resnet18" else 192
    model = models.build_model(arch, CLASSES, nc_control=dict(output_dim=dim, hidden_mlp=4 * dim), **kwargs).eval()
    batches = loader()
    out = extract(model, batches, ["encoder", "projector_raw", "projector"], device="cpu", show_progress=False)
    enc = out.features["encoder"]
    w1, w2 = model.projector[0].weight, model.projector[2].weight
    raw = torch.clamp(enc.double() @ w1.double().T, min=0) @ w2.double().T
    torch.testing.assert_close(out.features["projector_raw"].double(), raw, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(len(raw), dtype=torch.float64))
    torch.testing.assert_close(out.features["projector"], F.normalize(out.features["projector_raw"], eps=1e-8),
                               rtol=1e-5, atol=1e-6)
    assert "last_conv" not in model.named_layers() if arch.startswith("vit") else "last_conv" in model.named_layers()


def test_baselines_have_no_projector_layers():
    model = models.build_model("resnet18", CLASSES, stem="cifar", width=WIDTH)
    assert "projector_raw" not in model.named_layers() and "projector" not in model.named_layers()


def test_a_dotted_module_path_is_hooked_like_a_named_layer():
    torch.manual_seed(0)
    model = randomized(models.build_model("resnet18", CLASSES, nc_control=NC, stem="cifar", width=WIDTH))
    batches = loader()
    out = extract(model, batches, ["encoder.layer4.1.conv2", "last_conv", "encoder.layer4", "layer4",
                                   "projector.2", "projector_raw", "encoder.layer4.1.norm2"],
                  device="cpu", show_progress=False)
    feats = out.features
    assert torch.equal(feats["encoder.layer4.1.conv2"], feats["last_conv"])
    assert torch.equal(feats["encoder.layer4"], feats["layer4"])
    assert torch.equal(feats["projector.2"], feats["projector_raw"])
    assert feats["encoder.layer4.1.norm2"].shape == feats["last_conv"].shape
    # named layers win over a module of the same path: 'projector' is the normalized output
    assert describe_layers(model, ["projector", "projector_raw", "encoder"]) == {
        "projector": "projector_out", "projector_raw": "projector", "encoder": "encoder_out"}


def test_unknown_and_ambiguous_layers_are_one_line_user_errors():
    model = models.build_model("resnet18", CLASSES, nc_control=NC, stem="cifar", width=WIDTH)
    with pytest.raises(UserError, match=r"unknown layer 'layer4.1.conv2' \(did you mean encoder.layer4.1.conv2"):
        resolve_layers(model, ["layer4.1.conv2"])
    with pytest.raises(UserError, match=r"unknown layer 'encoder.layer9'.*e\.g\. encoder\.layer4\.1\.conv2$") as err:
        resolve_layers(model, ["encoder.layer9"])
    assert "\n" not in str(err.value)
    # a module called twice per forward pass (the block's shared ReLU) has no single output
    with pytest.raises(UserError, match="'encoder.layer4.1.act' runs more than once per forward pass"):
        extract(model, loader(), ["encoder.layer4.1.act"], device="cpu", show_progress=False)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


class InPlaceNet(nn.Module):
    """A layer whose 2-D output the forward pass later changes in place."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def named_layers(self):
        return {"fc": self.fc}

    def forward(self, x):
        return self.fc(x).relu_()


def test_a_2d_output_is_copied_before_later_in_place_ops():
    torch.manual_seed(0)
    net = InPlaceNet()
    x = torch.randn(8, 4)
    out = extract(net, DataLoader(TensorDataset(x, torch.zeros(8)), batch_size=8), ["fc"], device="cpu",
                  show_progress=False)
    with torch.no_grad():
        expected = net.fc(x)
    assert (expected < 0).any()
    torch.testing.assert_close(out.features["fc"], expected)


def test_the_cache_stores_a_dotted_path_beside_every_named_layer(tmp_path):
    torch.manual_seed(0)
    model = models.build_model("resnet18", 6, nc_control=NC, stem="cifar", width=WIDTH)
    ckpt = save_checkpoint(tmp_path / "m.pth", model=model, epoch=1, config={})
    spec = dict(name="fashion_mnist", split="test", classes=list(range(6)), max_per_class=4, image_size=16)
    fs = get_features(ckpt, spec, ["encoder.layer3.0.conv1"], cache_dir=tmp_path / "cache", device="cpu",
                      show_progress=False)
    assert (fs.path / "encoder.layer3.0.conv1.npy").is_file() and fs["encoder.layer3.0.conv1"].shape == (24, 32)
    stored = fs.meta["layers"]
    assert set(stored) == {"encoder.layer3.0.conv1", *model.named_layers()}
    assert stored["last_conv"]["module"] == "encoder.layer4.1.conv2"
    hit = get_features(ckpt, spec, ["last_conv", "encoder.layer3.0.conv1"], cache_dir=tmp_path / "cache",
                       device="cpu", show_progress=False)
    assert hit.path == fs.path and torch.equal(hit["encoder.layer3.0.conv1"], fs["encoder.layer3.0.conv1"])
    again = get_features(ckpt, spec, ["encoder.layer4.1.conv2"], cache_dir=tmp_path / "cache", device="cpu",
                         show_progress=False)  # a new path: extracted into the same entry
    assert torch.equal(again["encoder.layer4.1.conv2"], fs["last_conv"])


def test_evaluators_take_dotted_paths_and_skip_projector_layers_of_baselines(tiny_ckpts):
    cfg = Namespace(ckpt=[str(tiny_ckpts["base"]), str(tiny_ckpts["ours"])], names=["base", "ours"],
                    layers=["last_conv", "encoder.layer4.0.conv2", "projector_raw", "projector"])
    base, ours = open_runs(cfg)
    assert eval_layers(cfg, base) == ["last_conv", "encoder.layer4.0.conv2"]
    assert eval_layers(cfg, ours) == cfg.layers
    assert "last_conv" in ours.layer_names() and "projector_raw" in ours.layer_names()
    cfg.layers = ["encoder.layer4.0.conv3"]
    with pytest.raises(UserError, match=r"^ours: unknown layer 'encoder.layer4.0.conv3' \(did you mean "
                                        r"encoder.layer4.0.conv2"):
        eval_layers(cfg, ours)
