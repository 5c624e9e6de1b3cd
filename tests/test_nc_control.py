"""Tests of the method: simplex-ETF projector, entropy regularizer, controlled network."""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nc_control import (ControlledNet, EntropyRegularizer, NCConfig, l2_normalize, simplex_etf_matrix,
                        simplex_etf_projector)

IN_DIM, EMBED, HIDDEN, OUT, CLASSES = 12, 8, 32, 8, 5


class TinyEncoder(nn.Module):
    """Linear encoder with one stage, enough to exercise ControlledNet quickly."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(IN_DIM, EMBED), nn.ReLU())
        self.embed_dim = EMBED

    def stages(self) -> "OrderedDict[str, nn.Module]":
        return OrderedDict(fc=self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_net(seed: int = 0, **nc) -> ControlledNet:
    torch.manual_seed(seed)
    return ControlledNet(TinyEncoder(), CLASSES, NCConfig(**nc))


def formula(rows: int, cols: int, c: int) -> torch.Tensor:
    """sqrt(c/(c-1)) * (I_rect - ones/c), computed independently in numpy float64."""
    m = math.sqrt(c / (c - 1)) * (np.eye(rows, cols) - np.ones((rows, cols)) / c)
    return torch.from_numpy(m).to(torch.float32)


def batch(n: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, IN_DIM, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def train_steps(model: nn.Module, steps: int = 3, weight_decay: float = 0.05) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    reg = EntropyRegularizer()
    x, y = batch()
    for _ in range(steps):
        enc, _, logits = model(x, return_all=True)
        loss = F.cross_entropy(logits, y, label_smoothing=0.1) + 0.05 * reg(enc)
        opt.zero_grad()
        loss.backward()
        opt.step()


# --- NCConfig -------------------------------------------------------------------------------

def test_config_projector_only_when_both_widths_set():
    assert NCConfig(output_dim=8, hidden_mlp=32).has_projector
    assert not NCConfig().has_projector
    assert not NCConfig(output_dim=8, hidden_mlp=0).has_projector
    assert NCConfig.from_any(None) == NCConfig()
    assert NCConfig.from_any({"output_dim": 8, "hidden_mlp": 32}) == NCConfig(8, 32)
    cfg = NCConfig(8, 32, "learnable")
    assert NCConfig(**cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs, match", [
    (dict(output_dim=-1), "output_dim"),
    (dict(hidden_mlp=2.5), "hidden_mlp"),
    (dict(output_dim=8, hidden_mlp=32, projector="mlp"), "projector"),
    (dict(output_dim=8, hidden_mlp=32, l2_features=True), "l2_features"),
    (dict(output_dim=1, hidden_mlp=32), "output_dim >= 2"),
])
def test_config_rejects_bad_combinations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NCConfig(**kwargs)


def test_config_from_dict_rejects_unknown_field():
    with pytest.raises(ValueError, match="unknown NCConfig field"):
        NCConfig.from_any({"output_dim": 8, "hidden": 32})


# --- simplex-ETF projector ------------------------------------------------------------------

def test_etf_projector_weights_equal_formula_and_are_fixed():
    proj = simplex_etf_projector(IN_DIM, HIDDEN, OUT)
    assert isinstance(proj, nn.Sequential) and len(proj) == 3 and isinstance(proj[1], nn.ReLU)
    first, second = proj[0], proj[2]
    assert first.bias is None and second.bias is None
    # c is the projector output width for both layers.
    assert torch.equal(first.weight, formula(HIDDEN, IN_DIM, OUT))
    assert torch.equal(second.weight, formula(OUT, HIDDEN, OUT))
    assert not first.weight.requires_grad and not second.weight.requires_grad
    assert set(proj.state_dict()) == {"0.weight", "2.weight"}


def test_square_etf_matrix_is_a_simplex_frame():
    c = 6
    w = simplex_etf_matrix(c, c, c).double()
    gram = w @ w.T
    expected = torch.full((c, c), -1.0 / (c - 1), dtype=torch.float64)
    expected.fill_diagonal_(1.0)
    torch.testing.assert_close(gram, expected, atol=1e-6, rtol=0)


def test_etf_projector_stays_frozen_through_adamw_with_weight_decay():
    model = make_net(output_dim=OUT, hidden_mlp=HIDDEN)
    proj_before = {k: v.clone() for k, v in model.projector.state_dict().items()}
    cls_before = model.classifier.weight.detach().clone()
    enc_before = model.encoder.fc[0].weight.detach().clone()
    train_steps(model)
    for key, value in model.projector.state_dict().items():
        assert torch.equal(value, proj_before[key]), key
    assert not torch.equal(model.classifier.weight, cls_before)
    assert not torch.equal(model.encoder.fc[0].weight, enc_before)
    assert all(p.requires_grad for p in model.trainable_parameters())
    assert len(model.trainable_parameters()) == len(list(model.parameters())) - 2


def test_etf_projector_survives_state_dict_save_and_load(tmp_path):
    model = make_net(output_dim=OUT, hidden_mlp=HIDDEN)
    train_steps(model)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    fresh = make_net(seed=123, output_dim=OUT, hidden_mlp=HIDDEN)
    with torch.no_grad():
        fresh.projector[0].weight.zero_()
        fresh.projector[2].weight.zero_()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(fresh.projector[0].weight, formula(HIDDEN, EMBED, OUT))
    assert torch.equal(fresh.projector[2].weight, formula(OUT, HIDDEN, OUT))
    assert not fresh.projector[0].weight.requires_grad
    x, _ = batch()
    assert torch.equal(fresh(x), model(x))


def test_learnable_projector_changes_under_training():
    model = make_net(output_dim=OUT, hidden_mlp=HIDDEN, projector="learnable")
    assert model.projector[0].weight.requires_grad and model.projector[2].weight.requires_grad
    before = [model.projector[i].weight.detach().clone() for i in (0, 2)]
    train_steps(model)
    for i, w in zip((0, 2), before):
        assert not torch.equal(model.projector[i].weight, w)


# --- L2 normalization and entropy -----------------------------------------------------------

def test_l2_normalize_clamps_the_norm():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [3e-9, 4e-9]])
    out = l2_normalize(x)
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(out[1], torch.zeros(2))
    torch.testing.assert_close(out[2], x[2] / 1e-8)  # norm 5e-9 < eps: divided by eps
    torch.testing.assert_close(l2_normalize(x[:1], eps=1e-12), F.normalize(x[:1], eps=1e-12))


def test_l2_normalize_upcasts_low_precision_and_the_projection_is_unit_norm_under_autocast():
    out = l2_normalize(torch.randn(5, 7).to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    model = make_net(output_dim=OUT, hidden_mlp=HIDDEN)
    x, _ = batch(6)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        _, proj, logits = model(x, return_all=True)
    assert proj.dtype == torch.float32 and logits.dtype == torch.bfloat16
    torch.testing.assert_close(proj.norm(dim=1), torch.ones(6))


def entropy_by_loops(e: np.ndarray, eps: float = 1e-8) -> float:
    z = [row / max(np.sqrt(sum(v * v for v in row)), eps) for row in e]
    total = 0.0
    for i in range(len(z)):
        best_j, best_dot = None, -np.inf
        for j in range(len(z)):
            if j != i:
                dot = sum(a * b for a, b in zip(z[i], z[j]))
                if dot > best_dot:
                    best_j, best_dot = j, dot
        dist = np.sqrt(sum((a - b) ** 2 for a, b in zip(z[i], z[best_j])))
        total += np.log(dist + eps)
    return -total / len(z)


def test_entropy_matches_explicit_loop():
    torch.manual_seed(0)
    e = torch.randn(9, 6) * 3 + 0.5
    expected = entropy_by_loops(e.double().numpy())
    got = EntropyRegularizer()(e)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert EntropyRegularizer()(e.double()).item() == pytest.approx(expected, rel=1e-5)


def test_entropy_is_float32_under_bf16_autocast_and_handles_duplicates():
    torch.manual_seed(0)
    e = torch.randn(8, 6)
    e[1] = e[0]
    reference = EntropyRegularizer()(e)
    leaf = e.clone().requires_grad_(True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = EntropyRegularizer()(leaf.to(torch.bfloat16))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=2e-2)
    loss.backward()
    assert torch.isfinite(leaf.grad).all()
    assert reference.item() == pytest.approx(entropy_by_loops(e.double().numpy()), rel=1e-5)


def test_entropy_decreases_when_embeddings_spread():
    reg = EntropyRegularizer()
    clustered = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    spread = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert reg(spread) < reg(clustered)


def test_entropy_rejects_single_sample():
    with pytest.raises(ValueError, match="at least 2"):
        EntropyRegularizer()(torch.randn(1, 4))


# --- ControlledNet ----------------------------------------------------------------------------

def test_return_all_and_named_layers_with_projector():
    model = make_net(output_dim=OUT, hidden_mlp=HIDDEN)
    assert (model.embed_dim, model.head_dim) == (EMBED, OUT)
    x, _ = batch(6)
    enc, proj, logits = model(x, return_all=True)
    assert enc.shape == (6, EMBED) and proj.shape == (6, OUT) and logits.shape == (6, CLASSES)
    torch.testing.assert_close(proj.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(logits, model.classifier(proj))
    assert torch.equal(model(x), logits)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=name: seen.append((n, tuple(o.shape))))
             for name, m in model.named_layers().items()]
    model(x)
    for h in hooks:
        h.remove()
    assert seen == [("fc", (6, EMBED)), ("encoder", (6, EMBED)), ("projector_raw", (6, OUT)),
                    ("projector", (6, OUT)), ("classifier", (6, CLASSES))]


def test_baseline_has_no_projector():
    model = make_net()
    x, _ = batch(6)
    enc, proj, logits = model(x, return_all=True)
    assert proj is None and model.projector is None and model.head_dim == EMBED
    assert list(model.named_layers()) == ["fc", "encoder", "classifier"]
    torch.testing.assert_close(logits, model.classifier(enc))


def test_l2_features_gives_unit_norm_head_inputs():
    model = make_net(l2_features=True)
    inputs = []
    model.classifier.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    x, _ = batch(6)
    enc, proj, _ = model(x, return_all=True)
    assert proj is None
    torch.testing.assert_close(inputs[0].norm(dim=1), torch.ones(6))
    assert not torch.allclose(enc.norm(dim=1), torch.ones(6))


def test_controlled_net_checks_its_encoder():
    with pytest.raises(ValueError, match="embed_dim"):
        ControlledNet(nn.Linear(3, 3), CLASSES)
