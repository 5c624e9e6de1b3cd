"""Tests of the DDU backbone options of the ResNets: soft spectral normalization, leaky ReLU and
the average-pool shortcut (tiny widths and 32 px so they run in seconds)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from models.resnet import AvgPoolShortcut
from models.spectral import SoftSpectralNorm, spectral_normalize_convs

B, PX, CLASSES, W, COEFF = 4, 32, 10, 0.125, 3.0
DDU = dict(spectral_norm=COEFF, activation="leaky_relu", shortcut="avgpool")
RESNETS = ("resnet18", "resnet34")
N_CONVS = {"resnet18": 17, "resnet34": 33}  # stem + 2 per block; the 'conv' shortcut adds 3 more 1x1 convs


pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int = B, px: int = PX, seed: int = 0, chans: int = 3) -> torch.Tensor:
    return torch.randn(n, chans, px, px, generator=torch.Generator().manual_seed(seed))


def resnet(arch: str = "resnet18", seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return models.build_model(arch, CLASSES, stem="cifar", width=W, **kwargs)


def convs_of(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]


def matrix_sigma(weight: torch.Tensor) -> float:
    """Exact largest singular value of the weight reshaped to (out, in*k*k), in float64."""
    return torch.linalg.matrix_norm(weight.detach().double().reshape(weight.shape[0], -1), ord=2).item()


def power_iteration_sigma(apply, adjoint, shape: tuple[int, ...], iters: int = 500) -> float:
    """Largest singular value of the linear map ``apply`` (adjoint ``adjoint``) on inputs of
    ``shape`` by power iteration on ``adjoint(apply(.))``, in float64."""
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for _ in range(iters):
        x = adjoint(apply(x))
        x = x / x.norm()
    return apply(x).norm().item()


def matrix_power_sigma(weight: torch.Tensor) -> float:
    mat = weight.detach().double().reshape(weight.shape[0], -1)
    return power_iteration_sigma(lambda x: mat @ x, lambda y: mat.T @ y, (mat.shape[1],))


def conv_operator_sigma(conv: nn.Conv2d, px: int) -> float:
    """Operator norm of the convolution on (1, in, px, px) inputs (adjoint by autograd)."""
    weight = conv.weight.detach().double()

    def apply(x):
        return F.conv2d(x, weight, stride=conv.stride, padding=conv.padding)

    def adjoint(y):
        return torch.autograd.functional.vjp(apply, torch.zeros(1, conv.in_channels, px, px, dtype=torch.float64),
                                             y)[1]
    return power_iteration_sigma(apply, adjoint, (1, conv.in_channels, px, px), iters=200)


def conv_with_spectrum(singular_values: list[float], in_ch: int = 4, k: int = 3, seed: int = 0) -> nn.Conv2d:
    """A 3x3 conv whose reshaped weight (out x in*k*k) has exactly these singular values."""
    gen = torch.Generator().manual_seed(seed)
    out = len(singular_values)
    left, _ = torch.linalg.qr(torch.randn(out, out, generator=gen, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(in_ch * k * k, out, generator=gen, dtype=torch.float64))
    mat = left @ torch.diag(torch.tensor(singular_values, dtype=torch.float64)) @ right.T
    conv = nn.Conv2d(in_ch, out, k, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(mat.reshape(out, in_ch, k, k).float())
    return conv


# ----------------------------------------------------------------------------------------------
# spectral normalization


def test_test_helpers_agree_with_exact_svd():
    torch.manual_seed(0)
    weight = torch.randn(16, 8, 3, 3)
    assert matrix_power_sigma(weight) == pytest.approx(matrix_sigma(weight), rel=1e-4)
    conv = nn.Conv2d(1, 1, 1, bias=False)  # a 1x1 single-channel conv is a scalar map
    with torch.no_grad():
        conv.weight.fill_(-2.5)
    assert conv_operator_sigma(conv, px=5) == pytest.approx(2.5, rel=1e-9)


def test_layer_above_coeff_is_scaled_to_coeff_and_below_is_left_unchanged():
    torch.manual_seed(0)
    big = conv_with_spectrum([12.0, 6.0, 4.0, 3.0, 2.0, 1.0])
    small = conv_with_spectrum([1.5, 1.0, 0.5], in_ch=6, seed=1)
    raw_big, raw_small = big.weight.detach().clone(), small.weight.detach().clone()
    net = nn.Sequential(big, nn.ReLU(), small)
    assert spectral_normalize_convs(net, COEFF) == [big, small]
    x = images(2, px=8, chans=4)
    for _ in range(3):
        net(x)
    net.eval()
    assert matrix_sigma(raw_big) == pytest.approx(12.0, rel=1e-6)
    assert matrix_sigma(big.weight) == pytest.approx(COEFF, rel=1e-5)
    assert matrix_power_sigma(big.weight) <= COEFF * (1 + 1e-5)
    torch.testing.assert_close(big.weight, raw_big * (COEFF / 12.0), rtol=1e-5, atol=0)
    assert torch.equal(small.weight, raw_small)  # sigma 1.5 < coeff: untouched
    net.train()
    assert torch.equal(small.weight, raw_small)
    with torch.no_grad():
        torch.testing.assert_close(net(x), F.conv2d(F.relu(F.conv2d(x, raw_big * 0.25, padding=1)), raw_small,
                                                    padding=1), rtol=1e-4, atol=1e-5)


def test_one_power_iteration_per_training_forward_none_in_eval():
    torch.manual_seed(0)
    conv = conv_with_spectrum([5.0, 4.5, 4.0, 1.0])
    spectral_normalize_convs(conv, COEFF)
    sn = conv.parametrizations.weight[0]
    assert isinstance(sn, SoftSpectralNorm) and sn.n_power_iterations == 1 and sn.coeff == COEFF
    mat = conv.parametrizations.weight.original.detach().reshape(4, -1)
    v0 = sn._v.clone()
    x = images(1, px=8, chans=4)
    conv(x)
    u1 = F.normalize(mat @ v0, dim=0)
    v1 = F.normalize(mat.T @ u1, dim=0)
    torch.testing.assert_close(sn._u, u1)
    torch.testing.assert_close(sn._v, v1)
    conv.eval()
    conv(x)
    conv(x)
    assert torch.equal(sn._u, u1) and torch.equal(sn._v, v1)
    sigma = torch.dot(u1, mat @ v1)
    assert sn.sigma(conv.parametrizations.weight.original).item() == pytest.approx(sigma.item(), rel=1e-6)
    torch.testing.assert_close(conv.weight, conv.parametrizations.weight.original / (sigma / COEFF))


@pytest.mark.parametrize("arch", RESNETS)
def test_every_resnet_conv_is_normalized_after_a_few_training_forwards(arch):
    model = resnet(arch, **DDU)
    convs = convs_of(model)
    assert len(convs) == N_CONVS[arch] and model.encoder.stem[0] is convs[0]
    assert all(isinstance(c.parametrizations.weight[0], SoftSpectralNorm) for c in convs)
    # Kaiming-initialized weights have sigma ~1.3-1.9: push every layer above coeff. Their random
    # spectra have a nearly degenerate top, so one power iteration per step converges slowly: after
    # the 15 initial iterations and 3 forwards the estimate is still a few % low.
    with torch.no_grad():
        for conv in convs:
            conv.parametrizations.weight.original.mul_(4.0)
    model.train()
    for seed in range(3):
        model(images(2, seed=seed))
    model.eval()
    for conv in convs:
        raw = conv.parametrizations.weight.original
        estimate = conv.parametrizations.weight[0].sigma(raw).item()
        raw_sigma, eff_sigma = matrix_sigma(raw), matrix_sigma(conv.weight)
        assert raw_sigma > 1.5 * COEFF and estimate <= raw_sigma * (1 + 1e-5)
        assert eff_sigma == pytest.approx(COEFF * raw_sigma / estimate, rel=1e-5)  # W_eff = W * coeff / estimate
        assert eff_sigma <= COEFF * 1.1 and matrix_power_sigma(conv.weight) <= COEFF * 1.1
        assert eff_sigma >= COEFF * (1 - 1e-5)


def test_reshaped_norm_bounds_the_conv_operator_norm_by_kernel_size():
    """The documented difference from DDU's conv version: a k x k layer is k * coeff-Lipschitz."""
    model = resnet(spectral_norm=COEFF)
    with torch.no_grad():
        for conv in convs_of(model):
            conv.parametrizations.weight.original.mul_(4.0)
    model.eval()
    for conv in (model.encoder.stem[0], model.encoder.layer1[0].conv2, model.encoder.layer2[0].conv1,
                 model.encoder.layer2[0].shortcut[0]):
        k = conv.kernel_size[0]
        op_sigma = conv_operator_sigma(conv, px=8)
        assert op_sigma <= k * matrix_sigma(conv.weight) * (1 + 1e-6)
        assert op_sigma <= k * COEFF * 1.05


def test_state_dict_round_trip_restores_outputs_and_power_iteration_state():
    model = resnet(nc_control=dict(output_dim=64, hidden_mlp=256), **DDU)
    with torch.no_grad():
        for conv in convs_of(model):
            conv.parametrizations.weight.original.mul_(4.0)
    model.train()
    model(images(seed=1))
    model(images(seed=2))  # moves u, v and the BatchNorm statistics
    state = model.state_dict()
    keys = [k for k in state if k.startswith("encoder.layer2.0.conv1.")]
    assert keys == ["encoder.layer2.0.conv1.parametrizations.weight.original",
                    "encoder.layer2.0.conv1.parametrizations.weight.0._u",
                    "encoder.layer2.0.conv1.parametrizations.weight.0._v"]
    rebuilt = models.build_model(**json.loads(json.dumps(model.build_kwargs)))
    with torch.no_grad():
        rebuilt(images(seed=3))  # a different state before loading
    rebuilt.load_state_dict(state)
    x = images(seed=4)
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    model.train(), rebuilt.train()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))  # the next power iteration continues identically
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_spectral_norm_under_cpu_autocast_keeps_float32_estimate():
    model = resnet(spectral_norm=COEFF).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images(2))
    logits.float().sum().backward()
    sn = model.encoder.stem[0].parametrizations.weight[0]
    assert sn._u.dtype == torch.float32 and sn._v.dtype == torch.float32
    assert torch.isfinite(model.encoder.stem[0].parametrizations.weight.original.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_spectral_norm_on_cuda_with_bf16_autocast_and_channels_last():
    model = resnet(**DDU).cuda().to(memory_format=torch.channels_last).train()
    x = images(2).cuda().contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
    logits.float().sum().backward()
    sn = model.encoder.stem[0].parametrizations.weight[0]
    assert sn._u.is_cuda and sn._u.dtype == torch.float32
    cpu = models.build_model(**model.build_kwargs)
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    model.eval(), cpu.eval()
    with torch.no_grad():
        torch.testing.assert_close(cpu(images(2)), model(x).cpu(), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# activation and shortcut


def test_leaky_relu_replaces_every_relu_and_follows_the_block_formula():
    model = resnet(activation="leaky_relu")
    acts = [m for m in model.encoder.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    assert len(acts) == 1 + 8 and all(type(m) is nn.LeakyReLU and m.negative_slope == 0.01 for m in acts)
    assert type(model.encoder.stem[2]) is nn.LeakyReLU
    default = resnet()
    assert not any(isinstance(m, nn.LeakyReLU) for m in default.encoder.modules())
    default.load_state_dict(model.state_dict())  # same parameters: only the activation differs
    model.eval(), default.eval()
    block = model.encoder.layer2[0]
    x = images(2, px=8, chans=8)
    with torch.no_grad():
        hidden = F.leaky_relu(block.norm1(block.conv1(x)), 0.01)
        expected = F.leaky_relu(block.norm2(block.conv2(hidden)) + block.shortcut(x), 0.01)
        torch.testing.assert_close(block(x), expected)
        assert not torch.allclose(model(images(2)), default(images(2)))


def test_avgpool_shortcut_pools_and_zero_pads():
    shortcut = AvgPoolShortcut(3, 5, stride=2)
    x = torch.randn(2, 3, 8, 6)
    out = shortcut(x)
    assert out.shape == (2, 5, 4, 3)
    torch.testing.assert_close(out[:, :3], F.avg_pool2d(x, 2))
    assert torch.equal(out[:, 3:], torch.zeros(2, 2, 4, 3))
    odd = torch.randn(2, 3, 7, 7)  # DDU: odd sizes are subsampled, giving ceil(7 / 2) = 4 like the conv branch
    assert torch.equal(shortcut(odd)[:, :3], odd[:, :, ::2, ::2])
    with pytest.raises(ValueError, match="only add channels"):
        AvgPoolShortcut(5, 3, stride=2)


@pytest.mark.parametrize("arch", RESNETS)
def test_avgpool_shortcut_has_no_projection_conv(arch):
    model, default = resnet(arch, shortcut="avgpool"), resnet(arch)
    assert len(convs_of(model)) == N_CONVS[arch] and len(convs_of(default)) == N_CONVS[arch] + 3
    assert all(c.kernel_size == (3, 3) for c in convs_of(model))
    assert [type(model.encoder.stages()[f"layer{i}"][0].shortcut) for i in range(1, 5)] == \
           [nn.Identity, AvgPoolShortcut, AvgPoolShortcut, AvgPoolShortcut]
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < sum(p.numel() for p in default.parameters())


@pytest.mark.parametrize("px, last", [(32, 4), (28, 4)])
def test_avgpool_shortcut_matches_conv_branch_sizes(px, last):
    """28 px reaches 7x7 before layer4, where DDU's odd-size rule keeps the shapes equal."""
    model = resnet(shortcut="avgpool")
    with torch.no_grad():
        enc = model.encoder
        features = enc.layer4(enc.layer3(enc.layer2(enc.layer1(enc.stem(images(2, px=px))))))
    assert features.shape == (2, 64, last, last)


@pytest.mark.parametrize("arch", RESNETS)
def test_ddu_resnet_forward_backward_at_32px(arch):
    model = resnet(arch, **DDU).train()
    enc, proj, logits = model(images(), return_all=True)
    assert enc.shape == (B, 64) and proj is None and logits.shape == (B, CLASSES)
    F.cross_entropy(logits, torch.arange(B) % CLASSES).backward()
    for conv in convs_of(model):
        grad = conv.parametrizations.weight.original.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
        assert not conv.parametrizations.weight[0]._u.requires_grad


# ----------------------------------------------------------------------------------------------
# build_kwargs and validation


def test_build_kwargs_round_trip_with_ddu_options():
    model = resnet("resnet34", **{**DDU, "spectral_norm": 3})
    saved = json.loads(json.dumps(model.build_kwargs))
    assert (saved["spectral_norm"], saved["activation"], saved["shortcut"]) == (3.0, "leaky_relu", "avgpool")
    assert isinstance(saved["spectral_norm"], float)
    rebuilt = models.build_model(**saved)
    assert rebuilt.build_kwargs == model.build_kwargs
    assert list(rebuilt.state_dict()) == list(model.state_dict())


def test_old_build_kwargs_without_ddu_keys_build_the_default_resnet():
    default = resnet()
    old = {k: v for k, v in default.build_kwargs.items() if k not in ("spectral_norm", "activation", "shortcut")}
    model = models.build_model(**old)
    assert model.build_kwargs == default.build_kwargs
    assert (model.build_kwargs["spectral_norm"], model.build_kwargs["activation"],
            model.build_kwargs["shortcut"]) == (0.0, "relu", "conv")
    assert list(model.state_dict()) == list(default.state_dict())
    assert not any("parametrizations" in k for k in model.state_dict())
    model.load_state_dict(default.state_dict())


@pytest.mark.parametrize("arch, extra", [("vgg17", dict(width=W)), ("vit_tiny", dict(img_size=PX, patch_size=8))])
@pytest.mark.parametrize("option", [dict(spectral_norm=COEFF), dict(activation="leaky_relu"),
                                    dict(shortcut="avgpool")], ids=["spectral_norm", "activation", "shortcut"])
def test_vgg_and_vit_reject_ddu_options(arch, extra, option):
    (name, value), = option.items()
    with pytest.raises(ValueError, match=f"{arch} does not take {name}=.*resnet18/resnet34 only"):
        models.build_model(arch, CLASSES, **extra, **option)


@pytest.mark.parametrize("kwargs, match", [
    (dict(spectral_norm=-1.0), "spectral_norm is a coefficient"),
    (dict(spectral_norm=True), "spectral_norm is a coefficient"),
    (dict(spectral_norm=math.nan), "spectral_norm is a coefficient"),
    (dict(spectral_norm="3"), "spectral_norm is a coefficient"),
    (dict(activation="gelu"), "activation must be one of"),
    (dict(shortcut="identity"), "shortcut must be one of"),
    (dict(spectral_norm=COEFF, norm="gn_ws"), "spectral_norm needs norm='bn'"),
])
def test_bad_ddu_options_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet(**kwargs)


def test_soft_spectral_norm_rejects_bad_coefficients():
    conv = nn.Conv2d(2, 2, 3)
    for coeff in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="coefficient"):
            SoftSpectralNorm(conv.weight, coeff)
    spectral_normalize_convs(conv, COEFF)
    with pytest.raises(ValueError, match="registered once"):
        spectral_normalize_convs(conv, COEFF)
