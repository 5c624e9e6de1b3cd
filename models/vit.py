"""ViT-Tiny / ViT-Small encoders (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR
2021) built with timm, laid out as the official NC-OOD ViTs:

- no class token; the embedding is the mean of the patch tokens after the final LayerNorm
  (timm ``global_pool='avg'`` with ``fc_norm=False``, so the norm runs before the pooling);
- fixed 2-D sine-cosine position embeddings (Beyer, Zhai & Kolesnikov, "Better plain ViT
  baselines for ImageNet-1k", arXiv:2205.01580, 2022), kept in the state_dict, never trained;
- stochastic depth rising linearly to ``drop_path`` over the blocks (timm ``drop_path_rate``).

Three options host the ViTs of other codebases as models of ours (defaults: the official layout):

- ``class_token`` (False): prepend timm's learned class token (a prefix token: stage features
  average the patch tokens only, see :func:`nc_control.layers.pool_output`);
- ``pos_embed`` ('sincos'): ``'learned'`` keeps timm's trainable position embedding, one row per
  token, the class token included;
- ``global_pool`` ('avg'): ``'token'`` takes the class token after the final LayerNorm as the
  embedding instead of the patch-token mean.

A stock timm ``vit_tiny_patch16_224`` is ``class_token=True, pos_embed='learned',
global_pool='token'``; the official NC-OOD ViT is the default (its sine-cosine embedding is a
plain tensor, absent from its state_dict). A class token needs a learned position embedding.

ViT-Tiny: 12 blocks, width 192, 3 heads; ViT-Small: 12 blocks, width 384, 6 heads.
``img_size`` must be a multiple of ``patch_size`` (e.g. 32 px with patch 8, 28 px with patch 4).
ViTs always use LayerNorm and a patch embedding; the CNN options (``norm``, ``stem``, ``width``
and the DDU ResNet options) must stay at their defaults (:data:`models.defaults.ARCHS`). Hookable stages: ``block0`` .. ``block11`` (B x N x D, N tokens).
No pretrained weights are used. Initialization is timm's (every Linear trunc_normal(0.02) with zero
bias, LayerNorms one and zero, the patch embedding PyTorch's default), which is the official
``_init_vit_weights``; the classifier gets the same (:meth:`ViTEncoder.init_classifier`).
"""
from __future__ import annotations

from collections import OrderedDict

import timm
import torch
from torch import nn

from models.registry import register_model

SINCOS_TEMPERATURE = 10000.0
POS_EMBEDS = ("sincos", "learned")
GLOBAL_POOLS = ("avg", "token")


def sincos_2d_position_embedding(h: int, w: int, dim: int, temperature: float = SINCOS_TEMPERATURE) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (h*w) x dim, tokens in row-major order.

    With ``omega_k = temperature^(-k / (dim/4 - 1))`` for k = 0 .. dim/4 - 1, a token at row y,
    column x gets ``[sin(x omega), cos(x omega), sin(y omega), cos(y omega)]``.
    Computed in float64 and rounded once to float32.
    """
    if dim % 4 or dim < 8:
        raise ValueError(f"a 2-D sine-cosine position embedding needs dim divisible by 4 and >= 8, got {dim}")
    quarter = dim // 4
    omega = temperature ** -(torch.arange(quarter, dtype=torch.float64) / (quarter - 1))
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    y = y.reshape(-1, 1) * omega
    x = x.reshape(-1, 1) * omega
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).to(torch.float32)


class ViTEncoder(nn.Module):
    """A timm VisionTransformer without head (by default also without class token): image -> B x embed_dim."""

    def __init__(self, timm_name: str, img_size: int, patch_size: int, in_chans: int, drop_path: float,
                 class_token: bool = False, pos_embed: str = "sincos", global_pool: str = "avg") -> None:
        super().__init__()
        self.vit = timm.create_model(timm_name, pretrained=False, num_classes=0, img_size=img_size,
                                     patch_size=patch_size, in_chans=in_chans, drop_path_rate=drop_path,
                                     global_pool=global_pool, class_token=class_token, fc_norm=False)
        if pos_embed == "sincos":
            grid_h, grid_w = self.vit.patch_embed.grid_size
            pos = sincos_2d_position_embedding(grid_h, grid_w, self.vit.embed_dim)
            self.vit.pos_embed = nn.Parameter(pos.unsqueeze(0), requires_grad=False)
        self.embed_dim = int(self.vit.num_features)

    def stages(self) -> "OrderedDict[str, nn.Module]":
        return OrderedDict((f"block{i}", block) for i, block in enumerate(self.vit.blocks))

    def init_classifier(self, linear: nn.Linear) -> None:
        """The official ViT head init: weight trunc_normal(0.02), bias zero."""
        nn.init.trunc_normal_(linear.weight, std=0.02, a=-2.0, b=2.0)
        nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)


def _build_vit(arch: str, timm_name: str, *, in_chans: int, img_size: int, patch_size: int, drop_path: float,
               class_token: bool, pos_embed: str, global_pool: str) -> ViTEncoder:
    if patch_size < 1 or img_size < patch_size or img_size % patch_size:
        raise ValueError(f"{arch}: img_size ({img_size}) must be a positive multiple of patch_size ({patch_size})")
    if pos_embed not in POS_EMBEDS:
        raise ValueError(f"{arch}: pos_embed must be one of {POS_EMBEDS}, got {pos_embed!r}")
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"{arch}: global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
    if global_pool == "token" and not class_token:
        raise ValueError(f"{arch}: global_pool='token' reads the class token; set class_token=True or global_pool='avg'")
    if class_token and pos_embed == "sincos":
        raise ValueError(f"{arch}: the sine-cosine embedding has no row for a class token; "
                         f"use pos_embed='learned' with class_token=True")
    return ViTEncoder(timm_name, img_size, patch_size, in_chans, drop_path, class_token, pos_embed, global_pool)


@register_model
def vit_tiny(**options) -> ViTEncoder:
    """ViT-Tiny (embed_dim 192)."""
    return _build_vit("vit_tiny", "vit_tiny_patch16_224", **options)


@register_model
def vit_small(**options) -> ViTEncoder:
    """ViT-Small (embed_dim 384)."""
    return _build_vit("vit_small", "vit_small_patch16_224", **options)
