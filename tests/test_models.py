"""Tests of the backbones and the registry (tiny widths and 32 px so they run in seconds)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from models.layers import WSConv2d
from models.vit import sincos_2d_position_embedding
from nc_control import ControlledNet, NCConfig

B, PX, CLASSES, W = 4, 32, 10, 0.125
NC = dict(output_dim=64, hidden_mlp=256)  # the recipe: output_dim = embed_dim, hidden_mlp = 4 * embed_dim

# Output shapes of the named conv layers at 32 px and width 0.125 (stage channels 8, 16, 32, 64), in
# the order their hooks fire: last_conv runs inside the last stage (VGG: before its max-pool).
RESNET_CIFAR = {"layer1": (8, 32, 32), "layer2": (16, 16, 16), "layer3": (32, 8, 8), "last_conv": (64, 4, 4),
                "layer4": (64, 4, 4)}
RESNET_IMAGENET = {"layer1": (8, 8, 8), "layer2": (16, 4, 4), "layer3": (32, 2, 2), "last_conv": (64, 1, 1),
                   "layer4": (64, 1, 1)}
VGG = {"block1": (8, 16, 16), "block2": (16, 8, 8), "block3": (32, 4, 4), "block4": (64, 2, 2),
       "last_conv": (64, 2, 2), "block5": (64, 1, 1)}
CNN_CASES = [("vgg17", "imagenet", norm, VGG) for norm in ("bn", "gn_ws")] + [
    (arch, stem, norm, RESNET_CIFAR if stem == "cifar" else RESNET_IMAGENET)
    for arch in ("resnet18", "resnet34") for stem in ("imagenet", "cifar") for norm in ("bn", "gn_ws")]


pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int = B, px: int = PX, chans: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, chans, px, px, generator=torch.Generator().manual_seed(seed))


def run_with_hooks(model: ControlledNet, x: torch.Tensor):
    """Forward + backward; returns (names in hook-firing order with output shapes, (enc, proj, logits))."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=name: seen.append((n, tuple(o.shape))))
             for name, m in model.named_layers().items()]
    enc, proj, logits = model(x, return_all=True)
    for h in hooks:
        h.remove()
    loss = F.cross_entropy(logits, torch.arange(x.shape[0]) % CLASSES) + enc.square().mean()
    model.zero_grad()
    loss.backward()
    return seen, (enc, proj, logits)


def check_model(model: ControlledNet, stage_shapes: dict, embed_dim: int) -> None:
    has_proj = model.projector is not None
    out_dim = model.nc.output_dim
    seen, (enc, proj, logits) = run_with_hooks(model, images())
    expected = [(name, (B, *shape)) for name, shape in stage_shapes.items()] + [("encoder", (B, embed_dim))]
    if has_proj:
        expected += [("projector_raw", (B, out_dim)), ("projector", (B, out_dim))]
    expected.append(("classifier", (B, CLASSES)))
    assert seen == expected
    assert list(model.named_layers()) == [name for name, _ in expected]
    assert enc.shape == (B, embed_dim) and logits.shape == (B, CLASSES)
    assert model.embed_dim == embed_dim
    if has_proj:
        assert proj.shape == (B, out_dim) and model.head_dim == out_dim
        torch.testing.assert_close(proj.norm(dim=1), torch.ones(B))
        assert model.projector[0].weight.grad is None and model.projector[2].weight.grad is None
    else:
        assert proj is None and model.head_dim == embed_dim
    grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert model.classifier.weight.grad.abs().sum() > 0


def test_registry_lists_the_architectures():
    assert models.list_models() == ["resnet18", "resnet34", "vgg17", "vit_small", "vit_tiny"]
    assert set(models.MODELS) == set(models.list_models())


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match="resnet18, resnet34, vgg17, vit_small, vit_tiny"):
        models.build_model("resnet50", CLASSES)


@pytest.mark.parametrize("arch, stem, norm, shapes", CNN_CASES, ids=[f"{a}-{s}-{n}" for a, s, n, _ in CNN_CASES])
@pytest.mark.parametrize("with_projector", [True, False], ids=["proj", "base"])
def test_cnn_forward_backward_and_hooks(arch, stem, norm, shapes, with_projector):
    torch.manual_seed(0)
    model = models.build_model(arch, CLASSES, nc_control=NC if with_projector else None,
                               norm=norm, stem=stem, width=W)
    check_model(model, shapes, embed_dim=64)


@pytest.mark.parametrize("arch, dim", [("vit_tiny", 192), ("vit_small", 384)])
def test_vit_forward_backward_and_hooks(arch, dim):
    torch.manual_seed(0)
    model = models.build_model(arch, CLASSES, nc_control=dict(output_dim=dim, hidden_mlp=4 * dim),
                               img_size=PX, patch_size=8, drop_path=0.1)
    shapes = {f"block{i}": (16, dim) for i in range(12)}
    check_model(model, shapes, embed_dim=dim)
    check_model(ControlledNet(model.encoder, CLASSES, None), shapes, embed_dim=dim)
    vit = model.encoder.vit
    assert vit.cls_token is None and vit.num_prefix_tokens == 0
    assert vit.pos_embed.grad is None and not vit.pos_embed.requires_grad
    json.dumps(model.build_kwargs)


def test_vit_embedding_is_mean_of_patch_tokens_after_final_norm():
    torch.manual_seed(0)
    model = models.build_model("vit_tiny", CLASSES, img_size=PX, patch_size=8).eval()
    vit = model.encoder.vit
    x = images(2)
    with torch.no_grad():
        tokens = vit.patch_embed(x) + vit.pos_embed
        for block in vit.blocks:
            tokens = block(tokens)
        expected = vit.norm(tokens).mean(dim=1)
        enc, _, _ = model(x, return_all=True)
    assert isinstance(vit.norm, nn.LayerNorm)
    torch.testing.assert_close(enc, expected)
    assert torch.equal(vit.pos_embed[0], sincos_2d_position_embedding(4, 4, 192))


def test_vit_class_token_learned_position_and_token_pooling():
    torch.manual_seed(0)
    model = models.build_model("vit_tiny", CLASSES, img_size=PX, patch_size=8, class_token=True,
                               pos_embed="learned", global_pool="token").eval()
    vit = model.encoder.vit
    assert vit.num_prefix_tokens == 1 and vit.pos_embed.shape == (1, 17, 192) and vit.pos_embed.requires_grad
    x = images(2)
    with torch.no_grad():
        tokens = torch.cat([vit.cls_token.expand(2, -1, -1), vit.patch_embed(x)], dim=1) + vit.pos_embed
        for block in vit.blocks:
            tokens = block(tokens)
        expected = vit.norm(tokens)[:, 0]
        enc, _, _ = model(x, return_all=True)
    torch.testing.assert_close(enc, expected)
    assert model.build_kwargs["class_token"] and model.build_kwargs["global_pool"] == "token"
    rebuilt = models.build_model(**json.loads(json.dumps(model.build_kwargs))).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    avg = models.build_model("vit_tiny", CLASSES, img_size=PX, patch_size=8, pos_embed="learned")
    assert avg.encoder.vit.cls_token is None and avg.encoder.vit.pos_embed.shape == (1, 16, 192)


@pytest.mark.parametrize("arch, kwargs, match", [
    ("vit_tiny", dict(global_pool="token"), "class token"),
    ("vit_tiny", dict(class_token=True), "learned"),
    ("vit_tiny", dict(pos_embed="rope"), "pos_embed"),
    ("vit_tiny", dict(global_pool="max"), "global_pool"),
    ("vit_tiny", dict(conv_bias=True), "conv_bias"),
    ("resnet18", dict(class_token=True), "class_token"),
    ("resnet18", dict(conv_bias=True), "conv_bias"),
    ("vgg17", dict(pos_embed="learned"), "pos_embed"),
])
def test_architecture_options_apply_where_they_belong(arch, kwargs, match):
    size = dict(img_size=PX, patch_size=8) if arch.startswith("vit") else dict(width=W)
    with pytest.raises(ValueError, match=match):
        models.build_model(arch, CLASSES, **size, **kwargs)


def test_vgg_conv_bias_option():
    plain = models.build_model("vgg17", CLASSES, width=W)
    biased = models.build_model("vgg17", CLASSES, width=W, conv_bias=True)
    assert plain.encoder.block1[0].bias is None and biased.encoder.block1[0].bias.shape == (8,)
    assert len(biased.state_dict()) == len(plain.state_dict()) + 16
    assert biased.build_kwargs["conv_bias"] is True and plain.build_kwargs["conv_bias"] is False


def test_sincos_position_embedding_formula():
    pe = sincos_2d_position_embedding(2, 3, 8).double().numpy()
    omega = 1.0 / 10000.0 ** (np.arange(2) / 1.0)
    for row in range(2):
        for col in range(3):
            expected = np.concatenate([np.sin(col * omega), np.cos(col * omega),
                                       np.sin(row * omega), np.cos(row * omega)])
            np.testing.assert_allclose(pe[row * 3 + col], expected, atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=0.5), "width"),
    (dict(norm="gn_ws"), "LayerNorm"),
    (dict(stem="cifar"), "patch"),
    (dict(img_size=30, patch_size=8), "multiple of patch_size"),
])
def test_vit_rejects_cnn_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build_model("vit_tiny", CLASSES, **{"img_size": PX, "patch_size": 8, **kwargs})


@pytest.mark.parametrize("kwargs, match", [
    (dict(drop_path=0.1), "drop_path"),
    (dict(norm="ln"), "norm"),
    (dict(stem="tiny"), "stem"),
    (dict(width=0.0), "width"),
    (dict(norm="gn_ws", width=0.75), "GroupNorm"),
])
def test_cnn_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build_model("resnet18", CLASSES, **kwargs)


def test_bad_num_classes_and_nc_control_are_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        models.build_model("resnet18", 0, width=W)
    with pytest.raises(ValueError, match="l2_features"):
        models.build_model("resnet18", CLASSES, width=W, nc_control=dict(**NC, l2_features=True))


@pytest.mark.parametrize("arch, kwargs", [
    ("resnet18", dict(norm="gn_ws", stem="cifar", width=W, nc_control=NCConfig(**NC))),
    ("vgg17", dict(norm="bn", width=W, in_chans=1, nc_control=dict(l2_features=True))),
])
def test_build_kwargs_round_trip(arch, kwargs):
    torch.manual_seed(0)
    model = models.build_model(arch, CLASSES, **kwargs).eval()
    saved = json.loads(json.dumps(model.build_kwargs))
    assert saved["arch"] == arch and saved["num_classes"] == CLASSES
    assert saved["nc_control"] == NCConfig.from_any(kwargs["nc_control"]).to_dict()
    torch.manual_seed(1)
    rebuilt = models.build_model(**saved).eval()
    assert rebuilt.build_kwargs == model.build_kwargs and rebuilt.nc == model.nc
    rebuilt.load_state_dict(model.state_dict())
    x = images(2, chans=kwargs.get("in_chans", 3))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_width_sets_embed_dim():
    assert models.build_model("resnet18", CLASSES, width=0.25).embed_dim == 128
    assert models.build_model("resnet18", CLASSES).embed_dim == 512
    assert models.build_model("vgg17", CLASSES, width=0.25).embed_dim == 128


def test_gn_ws_layers_and_residual_init():
    model = models.build_model("resnet18", CLASSES, norm="gn_ws", width=W)
    block = model.encoder.layer1[0]
    assert isinstance(block.conv1, WSConv2d) and block.conv1.bias is None
    assert isinstance(block.norm1, nn.GroupNorm) and block.norm1.num_groups == 8
    assert model.encoder.layer4[0].norm1.num_groups == 32
    assert torch.equal(block.norm2.weight, torch.zeros(8))  # last norm of each residual branch starts at 0
    bn_block = models.build_model("resnet18", CLASSES, norm="bn", width=W).encoder.layer1[0]
    assert isinstance(bn_block.norm2, nn.BatchNorm2d) and type(bn_block.conv1) is nn.Conv2d
    assert torch.equal(bn_block.norm2.weight, torch.ones(8))


def test_weight_standardization_formula():
    torch.manual_seed(0)
    conv = WSConv2d(3, 5, 3, padding=1, bias=False)
    w = conv.weight.detach().double().reshape(5, -1).numpy()
    w_hat = (w - w.mean(axis=1, keepdims=True)) / (w.std(axis=1, ddof=1, keepdims=True) + 1e-5)
    expected_weight = torch.from_numpy(w_hat).float().reshape(conv.weight.shape)
    torch.testing.assert_close(conv.standardized_weight(), expected_weight)
    x = images(2, px=6)
    torch.testing.assert_close(conv(x), F.conv2d(x, expected_weight, padding=1), rtol=1e-4, atol=1e-5)


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = models.build_model("resnet18", CLASSES, norm="gn_ws", stem="cifar", width=W, nc_control=NC).eval()
    x = images(2)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_vgg_accepts_28px_grayscale():
    model = models.build_model("vgg17", CLASSES, width=W, in_chans=1, stem="cifar")
    seen, (enc, _, logits) = run_with_hooks(model, images(px=28, chans=1))
    assert dict(seen)["block5"] == (B, 64, 1, 1) and logits.shape == (B, CLASSES)
    assert math.isfinite(enc.sum().item())


def test_every_architecture_has_its_default_configuration():
    from models.defaults import ARCHS
    from models.registry import OPTION_DEFAULTS

    assert set(ARCHS) == set(models.list_models())
    for arch, d in ARCHS.items():
        assert set(d.options) <= set(OPTION_DEFAULTS), arch
        cnn = d.family == "cnn"
        assert (d.crop_interpolation, d.channels_last, d.hook_layer, d.probe_recipe) == (
            ("bilinear", True, "last_conv", "cnn") if cnn else ("bilinear", False, "encoder", "vit")), arch
        model = models.build_model(arch, CLASSES, **(dict(width=W) if cnn else dict(img_size=PX, patch_size=8)))
        assert d.hook_layer in model.named_layers()


def test_the_scripts_read_the_defaults_without_torch():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(models.__file__).parent / "defaults.py"
    out = subprocess.run([sys.executable, "-X", "importtime", str(script), "vit_small"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == [
        "DEFAULT_HOOK_LAYER=encoder", "DEFAULT_PROJECTOR_LAYER=projector", "DEFAULT_PROBE_RECIPE=vit",
        "DEFAULT_CIFAR_STATS=imagenet"]
    assert "torch" not in out.stderr  # the import-time log names every module imported
    bad = subprocess.run([sys.executable, str(script), "alexnet"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown arch 'alexnet'")
