"""The fixed simplex-ETF projector.

A simplex equiangular tight frame (ETF) is the geometry that neural collapse converges to
(Papyan, Han & Donoho, PNAS 2020): ``c`` unit vectors with pairwise cosine ``-1/(c-1)``.
Harun, Gallardo & Kanan (ICML 2025) fix the weights of a two-layer projector to such a frame so
that the projector output collapses, which improves out-of-distribution detection.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def simplex_etf_matrix(rows: int, cols: int, c: int) -> torch.Tensor:
    """``sqrt(c/(c-1)) * (I_rect - (1/c) * ones)`` of shape ``rows x cols`` (float32).

    ``I_rect`` is the rectangular identity (ones on the main diagonal). For a square ``c x c``
    matrix the rows form a simplex ETF: unit norm, pairwise inner product ``-1/(c-1)``.
    Computed in float64 and rounded once to float32.
    """
    if c < 2:
        raise ValueError(f"a simplex ETF needs c >= 2, got c={c}")
    eye = torch.eye(rows, cols, dtype=torch.float64)
    ones = torch.ones(rows, cols, dtype=torch.float64)
    return (math.sqrt(c / (c - 1)) * (eye - ones / c)).to(torch.float32)


def _freeze_to(linear: nn.Linear, weight: torch.Tensor) -> None:
    # Still an nn.Parameter so it is saved in and restored from the state_dict; without a
    # gradient no optimizer (nor its weight decay) ever updates it.
    linear.weight = nn.Parameter(weight, requires_grad=False)


def simplex_etf_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear(in_dim, hidden_dim) -> ReLU -> Linear(hidden_dim, out_dim)``, no biases, fixed.

    Both weights (shapes ``hidden_dim x in_dim`` and ``out_dim x hidden_dim``) are set to
    :func:`simplex_etf_matrix` with the same ``c = out_dim`` (the projector's output width) for
    both layers, as in the official NC-OOD code, and never trained (``requires_grad=False``).
    The L2 normalization of the output is applied by :class:`nc_control.ControlledNet`.

    The official recipe uses ``out_dim = in_dim = d`` and ``hidden_dim = 4 d``: hidden unit i < d
    then computes ``sqrt(c/(c-1)) * (e_i - mean(e))``. With ``out_dim`` much smaller than
    ``in_dim`` every hidden unit subtracts ``sum(e)/c``, more than the mean, and for the
    non-negative embeddings of a ReLU network the ReLU zeroes (nearly) all of them.
    """
    for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
        if value < 1:
            raise ValueError(f"simplex_etf_projector: {name} must be >= 1, got {value}")
    first = nn.Linear(in_dim, hidden_dim, bias=False)
    second = nn.Linear(hidden_dim, out_dim, bias=False)
    _freeze_to(first, simplex_etf_matrix(hidden_dim, in_dim, c=out_dim))
    _freeze_to(second, simplex_etf_matrix(out_dim, hidden_dim, c=out_dim))
    return nn.Sequential(first, nn.ReLU(), second)


def learnable_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Same shapes as :func:`simplex_etf_projector`, trained from the default ``nn.Linear`` init."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False), nn.ReLU(),
                         nn.Linear(hidden_dim, out_dim, bias=False))


def random_projector(in_dim: int, hidden_dim: int, out_dim: int, std: float = 0.02) -> nn.Sequential:
    """Same shapes as :func:`simplex_etf_projector`, both weights fixed to trunc_normal(0, std^2)
    draws (truncated at +-2, i.e. untruncated in effect) and never trained.

    This is the projector of the official NC-OOD ViTs (``vit_exp_all/etf_vision_transformer.py``):
    the model sets the two weights to the simplex-ETF matrices with ``requires_grad=False`` and
    then calls ``self.apply(_init_vit_weights)``, which redraws every ``nn.Linear`` weight from
    trunc_normal(0.02) in place; the frozen flag survives, so the paper's ViT numbers come from a
    fixed random projector. Use it to reproduce them; the ETF projector is the method as described.
    """
    layers = learnable_projector(in_dim, hidden_dim, out_dim)
    for linear in (layers[0], layers[2]):
        _freeze_to(linear, nn.init.trunc_normal_(torch.empty_like(linear.weight), std=std, a=-2.0, b=2.0))
    return layers
