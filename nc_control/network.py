"""The controlled network: encoder -> [projector -> L2 norm] -> linear classifier."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from nc_control.config import NCConfig
from nc_control.etf import learnable_projector, random_projector, simplex_etf_projector
from nc_control.layers import named_layers
from nc_control.normalize import l2_normalize

PROJECTOR_EPS = 1e-8   # F.normalize eps after the projector in the official NC-OOD code
FEATURE_EPS = 1e-12    # F.normalize default, used for the l2_features ablation


class ControlledNet(nn.Module):
    """Encoder, optional projector with L2-normalized output, and a linear classifier with bias.

    ``encoder`` maps an image batch to a B x ``encoder.embed_dim`` embedding and provides
    ``stages()``, an ordered dict of its hookable stage modules (shallow to deep).

    - with a projector (``nc.has_projector``): ``logits = W * normalize(P(e)) + b``, where P is
      the fixed simplex-ETF projector (``nc.projector='etf'``), its learnable twin, or a fixed
      random one (``'random'``, the official ViT code's);
    - with ``nc.l2_features``: ``logits = W * normalize(e) + b``; the normalized embedding
      passes through the hookable identity ``head_input``, the penultimate feature of the
      L2-normalized ResNets of Haas, Yolland & Rabus (TMLR 2022);
    - otherwise: ``logits = W * e + b``.

    The classifier is initialized as the official code initializes it for the backbone: by the
    encoder's ``init_classifier(linear)`` when it has one (ResNet, VGG, ViT), else a Xavier-uniform
    weight; the bias keeps ``nn.Linear``'s default U(-1/sqrt(d), 1/sqrt(d)) unless that method sets it.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, nc: NCConfig | dict | None = None) -> None:
        super().__init__()
        embed_dim = getattr(encoder, "embed_dim", None)
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError("ControlledNet needs an encoder with an integer attribute embed_dim >= 1 (its output width)")
        if not callable(getattr(encoder, "stages", None)):
            raise ValueError("ControlledNet needs an encoder with a stages() method returning its hookable stage modules")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.nc = NCConfig.from_any(nc)
        self.num_classes = num_classes
        self.encoder = encoder
        self.embed_dim = embed_dim
        # Identity modules give forward hooks the pooled embedding and the normalized projection.
        self.encoder_out = nn.Identity()
        if self.nc.has_projector:
            make = {"etf": simplex_etf_projector, "learnable": learnable_projector,
                    "random": random_projector}[self.nc.projector]
            self.projector = make(embed_dim, self.nc.hidden_mlp, self.nc.output_dim)
            self.projector_out = nn.Identity()
            self.head_dim = self.nc.output_dim
        else:
            self.projector = None
            self.projector_out = None
            self.head_dim = embed_dim
        self.head_input = nn.Identity() if self.nc.l2_features else None
        self.classifier = nn.Linear(self.head_dim, num_classes)
        init_classifier = getattr(encoder, "init_classifier", None)
        if callable(init_classifier):
            init_classifier(self.classifier)
        else:
            nn.init.xavier_uniform_(self.classifier.weight)

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """Logits, or with ``return_all`` the tuple (encoder embedding, L2-normalized projector
        output or None without a projector, logits)."""
        enc = self.encoder_out(self.encoder(x))
        proj = None
        if self.projector is not None:
            proj = self.projector_out(l2_normalize(self.projector(enc), eps=PROJECTOR_EPS))
            head_in = proj
        elif self.nc.l2_features:
            head_in = self.head_input(l2_normalize(enc, eps=FEATURE_EPS))
        else:
            head_in = enc
        logits = self.classifier(head_in)
        return (enc, proj, logits) if return_all else logits

    def classifier_input(self, out: tuple) -> torch.Tensor:
        """The features the classifier reads, from the ``return_all`` tuple ``out``: the
        normalized projection, the normalized embedding (``l2_features``) or the embedding."""
        enc, proj, _ = out
        if proj is not None:
            return proj
        return l2_normalize(enc, eps=FEATURE_EPS) if self.nc.l2_features else enc

    @property
    def head_layer(self) -> str:
        """The named layer whose output the classifier reads (see :meth:`named_layers`)."""
        return self.nc.head_layer

    def named_layers(self) -> "OrderedDict[str, nn.Module]":
        """Hookable layers in the order they run, ``name -> module``: the encoder stages,
        ``last_conv`` (CNNs), ``encoder``, ``projector_raw`` and ``projector`` (with a projector),
        ``head_input`` (with ``l2_features``) and ``classifier``; the table of
        :mod:`nc_control.layers` says what each is and how its output is pooled."""
        return named_layers(self)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters an optimizer should update (the fixed ETF weights are excluded)."""
        return [p for p in self.parameters() if p.requires_grad]
