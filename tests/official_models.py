"""The models of the official NC-OOD code, rebuilt for the tests from its published description
(module names, shapes and forward passes of ``resnet/resnet.py``, ``resnet_etf.py``,
``vgg.py``, ``vgg_etf.py`` and ``vit_exp_all/etf_vision_transformer.py``), and the ways its
training scripts save them. They share no code with ``models/``: a converted checkpoint that
matches them proves the conversion.
"""
from __future__ import annotations

import argparse
import math
from functools import partial

import timm
import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

VGG17_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


class StandardizedConv(nn.Conv2d):
    """The official weight standardization: subtract each filter's mean, divide by its unbiased
    std + 1e-5."""

    def forward(self, x):
        w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        w = w / (w.flatten(1).std(dim=1).view(-1, 1, 1, 1) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def etf(rows: int, cols: int, c: int) -> torch.Tensor:
    return math.sqrt(c / (c - 1)) * (torch.eye(rows, cols) - torch.ones(rows, cols) / c)


def projection_head(dim: int, hidden: int, out: int, fixed: bool) -> nn.Sequential:
    head = nn.Sequential(nn.Linear(dim, hidden, bias=not fixed), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out, bias=not fixed))
    if fixed:
        head[0].weight = nn.Parameter(etf(hidden, dim, out), requires_grad=False)
        head[2].weight = nn.Parameter(etf(out, hidden, out), requires_grad=False)
    return head


class ProjectedClassifier(nn.Module):
    """The official tail: pooled embedding xe0 -> [projection_head -> L2 (eps 1e-8)] -> linear."""

    def tail(self, xe0, embed):
        xe = F.normalize(self.projection_head(xe0), p=2, dim=-1, eps=1e-8) if self.projection_head is not None else xe0
        out = self.head_layer()(xe)
        return (xe0, xe, out) if embed else out


def _init_randomly(model: nn.Module, seed: int) -> None:
    """Random norm affines, BatchNorm statistics and tokens (their defaults are constants), so that
    a name mapped onto the wrong tensor cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)

    def noise(t: torch.Tensor, scale: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=g) * scale

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                m.weight.copy_(1 + noise(m.weight, 0.2))
                m.bias.copy_(noise(m.bias, 0.2))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(noise(m.running_mean, 0.1))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
        for name in ("cls_token", "pos_embed"):
            if isinstance(getattr(model, name, None), nn.Parameter):
                getattr(model, name).copy_(noise(getattr(model, name), 0.02))


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride, norm):
        super().__init__()
        conv = StandardizedConv if norm == "gn_ws" else nn.Conv2d
        make_norm = (lambda c: nn.GroupNorm(32, c)) if norm == "gn_ws" else nn.BatchNorm2d
        self.conv1 = conv(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = make_norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = make_norm(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(conv(inplanes, planes, 1, stride, bias=False), make_norm(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class OfficialResNet(ProjectedClassifier):
    """ResNet of ``resnet.py`` (norm='bn') / ``resnet_etf.py`` (norm='gn_ws', fixed ETF projector)."""

    def __init__(self, blocks, num_classes, norm="bn", output_dim=0, hidden_mlp=0, seed=0):
        super().__init__()
        conv = StandardizedConv if norm == "gn_ws" else nn.Conv2d
        self.conv1 = conv(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.GroupNorm(32, 64) if norm == "gn_ws" else nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(inplanes, planes, 2 if i and not j else 1, norm))
                inplanes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # resnet_etf.py: AvgPool2d(7), the same on its 224 px inputs
        self.projection_head = projection_head(512, hidden_mlp, output_dim, norm == "gn_ws") if output_dim else None
        self.fc = nn.Linear(output_dim or 512, num_classes)
        _init_randomly(self, seed)

    def head_layer(self):
        return self.fc

    def forward(self, x, embed=False):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.tail(self.avgpool(x).flatten(1), embed)


class OfficialVGG(ProjectedClassifier):
    """VGG17 of ``vgg.py`` (norm='bn': biased convs + BatchNorm) / ``vgg_etf.py`` (norm='gn_ws':
    standardized bias-free convs + GroupNorm(32), fixed ETF projector)."""

    def __init__(self, num_classes, norm="bn", output_dim=0, hidden_mlp=0, seed=0):
        super().__init__()
        layers, in_ch = [], 3
        for v in VGG17_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            if norm == "gn_ws":
                layers += [StandardizedConv(in_ch, v, 3, 1, 1, bias=False), nn.GroupNorm(32, v), nn.ReLU(inplace=True)]
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_ch = v
        layers.append(nn.AvgPool2d(kernel_size=1, stride=1))
        self.features = nn.Sequential(*layers)
        self.projection_head = projection_head(512, hidden_mlp, output_dim, norm == "gn_ws") if output_dim else None
        self.classifier = nn.Linear(output_dim or 512, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        _init_randomly(self, seed)

    def head_layer(self):
        return self.classifier

    def forward(self, x, embed=False):
        return self.tail(self.avgpool(self.features(x)).flatten(1), embed)


def sincos_2d(h, w, dim, temperature=10000.0):
    """The official ``posemb_sincos_2d``."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4) / (dim // 4 - 1))
    y, x = y.flatten()[:, None] * omega[None, :], x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).float()


class OfficialViT(ProjectedClassifier):
    """``etf_vision_transformer.VisionTransformer`` as ``models_act`` builds it (vit_tiny / evit_tiny ...):
    no class token; a plain-tensor sine-cosine position embedding; blocks; LayerNorm(eps 1e-6);
    the mean of the tokens; [ETF projector]; ``head``."""

    def __init__(self, embed_dim, num_heads, num_classes, img_size=224, patch_size=16, output_dim=0, hidden_mlp=0,
                 seed=0):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.pos_embed = sincos_2d(img_size // patch_size, img_size // patch_size, embed_dim)  # not a parameter
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, 4.0, qkv_bias=True,
                                            norm_layer=partial(nn.LayerNorm, eps=1e-6)) for _ in range(12)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.projection_head = projection_head(embed_dim, hidden_mlp, output_dim, True) if output_dim else None
        self.head = nn.Linear(output_dim or embed_dim, num_classes)
        _init_randomly(self, seed)

    def head_layer(self):
        return self.head

    def forward(self, x, embed=False):
        x = self.blocks(self.patch_embed(x) + self.pos_embed)
        return self.tail(self.norm(x).mean(dim=1), embed)


def official_args(**kwargs) -> argparse.Namespace:
    """The argparse flags the official scripts store in their checkpoints."""
    return argparse.Namespace(data="/data/datasets/ImageNet-100", lr=0.01, weight_decay=0.05, epochs=100,
                              image_size=224, gpu=None, multiprocessing_distributed=False, **kwargs)


def cnn_epoch_checkpoint(model: nn.Module, arch: str, epoch: int = 3) -> dict:
    """What ``pretrain_resnet*.py`` / ``pretrain_vgg*.py`` save each epoch: the model under
    DataParallel (a VGG's ``features`` only, as those scripts wrap it), the optimizer and the
    warmup + cosine schedule, the accuracies as tensors and the argparse flags."""
    if arch.startswith("vgg"):
        model.features = nn.DataParallel(model.features)
        state = model.state_dict()
        model.features = model.features.module
    else:
        state = nn.DataParallel(model).state_dict()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=5)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=95, eta_min=0.0)
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[5])
    return {"epoch": epoch, "arch": arch, "state_dict": state, "best_acc1": torch.tensor(41.5),
            "best_acc5": torch.tensor(70.25), "optimizer": optimizer.state_dict(),
            "lr_scheduler": schedule.state_dict(), "args": official_args(arch=arch, alpha=0.05)}


def vit_checkpoint(model: nn.Module, epoch: int = 2) -> dict:
    """What ``vit_exp_all/main_pretrain.py`` saves (DeiT-style): the unwrapped model under
    ``model``, its EMA, the optimizer, timm's scheduler and loss-scaler states, the flags."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=8e-4, weight_decay=0.05)
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "lr_scheduler": {"t_initial": 100, "warmup_t": 5, "base_values": [8e-4]}, "epoch": epoch,
            "model_ema": {k: v.clone() for k, v in model.state_dict().items()},
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 0},
            "args": official_args(model="evit_tiny", input_size=224, drop_path=0.1)}


def stock_timm_vit(num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes)
    _init_randomly(model, seed)
    return model
