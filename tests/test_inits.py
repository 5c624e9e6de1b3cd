"""Initializations as the official code sets them (resnet/resnet.py, resnet_etf.py, vgg/vgg.py,
vgg_etf.py, etf_vision_transformer.py), checked against the distributions' formulas, and the
official ViT's random frozen projector."""
import math

import pytest
import torch

from models import build_model
from nc_control import NCConfig, simplex_etf_matrix

pytestmark = pytest.mark.usefixtures("one_thread")


def std(t):
    return t.detach().double().std().item()


@pytest.fixture(scope="module")
def resnets():
    torch.manual_seed(0)
    return {norm: build_model("resnet18", 100, norm=norm) for norm in ("bn", "gn_ws")}


def test_batchnorm_resnet_convs_are_kaiming_fan_in_and_groupnorm_resnet_convs_fan_out(resnets):
    for norm, mode in (("bn", "fan_in"), ("gn_ws", "fan_out")):
        convs = {n: m for n, m in resnets[norm].named_modules() if isinstance(m, torch.nn.Conv2d)}
        assert len(convs) == 20  # stem, 16 block convs, 3 shortcut convs
        for name, conv in convs.items():
            out_ch, in_ch, kh, kw = conv.weight.shape
            fan = in_ch * kh * kw if mode == "fan_in" else out_ch * kh * kw
            assert std(conv.weight) == pytest.approx(math.sqrt(2 / fan), rel=0.05), (norm, name)
    # a stage's first conv doubles the channels: fan_in and fan_out differ by a factor 2
    bn, gn = (resnets[n].encoder.layer2[0].conv1.weight for n in ("bn", "gn_ws"))
    assert std(bn) / std(gn) == pytest.approx(math.sqrt(2), rel=0.03)


def test_cnn_classifiers_keep_the_official_weight_init_and_pytorchs_default_bias(resnets):
    torch.manual_seed(0)
    vgg = build_model("vgg17", 100, norm="bn")
    bound = 1 / math.sqrt(512)
    for name, model, weight_std in (("resnet bn", resnets["bn"], math.sqrt(2 / 512)),            # Kaiming fan_in
                                    ("resnet gn_ws", resnets["gn_ws"], math.sqrt(2 / (512 + 100))),  # Xavier
                                    ("vgg", vgg, math.sqrt(2 / (512 + 100)))):
        weight, bias = model.classifier.weight, model.classifier.bias
        assert std(weight) == pytest.approx(weight_std, rel=0.05), name
        assert bias.abs().max() <= bound and std(bias) == pytest.approx(bound / math.sqrt(3), rel=0.3), name
    assert resnets["gn_ws"].classifier.weight.abs().max() <= math.sqrt(6 / 612)  # uniform within the Xavier bound


def test_vit_head_is_trunc_normal_002_with_zero_bias():
    torch.manual_seed(0)
    model = build_model("vit_small", 100, img_size=32, patch_size=16)
    assert std(model.classifier.weight) == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(model.classifier.bias) == 0
    block = model.encoder.vit.blocks[0]
    assert std(block.attn.qkv.weight) == pytest.approx(0.02, rel=0.05) and torch.count_nonzero(block.attn.qkv.bias) == 0


def test_random_projector_is_frozen_trunc_normal_as_the_official_vit_trains_it():
    torch.manual_seed(0)
    nc = {"output_dim": 192, "hidden_mlp": 768, "projector": "random"}
    model = build_model("vit_tiny", 10, nc_control=nc, img_size=16, patch_size=8)
    first, second = model.projector[0].weight, model.projector[2].weight
    assert first.shape == (768, 192) and second.shape == (192, 768)
    for w in (first, second):
        assert not w.requires_grad and std(w) == pytest.approx(0.02, rel=0.05) and w.mean().abs() < 1e-3
        assert not torch.allclose(w, simplex_etf_matrix(*w.shape, c=192))
    assert all(p is not first and p is not second for p in model.trainable_parameters())
    again = build_model("vit_tiny", 10, nc_control=nc, img_size=16, patch_size=8)
    again.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 16, 16)
    model.eval(), again.eval()
    torch.testing.assert_close(again(x), model(x))
    etf = build_model("vit_tiny", 10, nc_control={**nc, "projector": "etf"}, img_size=16, patch_size=8)
    torch.testing.assert_close(etf.projector[0].weight, simplex_etf_matrix(768, 192, c=192))
    assert NCConfig(**nc).projector == "random"
    with pytest.raises(ValueError, match="projector must be one of"):
        NCConfig(output_dim=8, hidden_mlp=32, projector="orthogonal")
