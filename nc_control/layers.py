"""The named layers of a controlled network: every hookable name, in depth order, the module it
hooks and how its output becomes one vector per image.

=================  ===========================================  ====================  ==========================
name               the output of                                shape                 pooled to B x D by
=================  ===========================================  ====================  ==========================
``layer1``..       each encoder stage (``encoder.stages()``):   B x C x H x W, or     global average pool, or the
                   ResNet ``layer1..4``, VGG ``block1..5``,      B x N x D tokens      mean of the patch tokens
                   ViT ``block0..11``
``last_conv``      the backbone's last convolution (CNNs),      B x C x H x W         global average pool
                   before its norm, the residual add and the
                   activation: the official evaluation's hook
                   point (listed just before the last stage)
``encoder``        the pooled embedding the entropy term acts   B x D                 as it is
                   on
``projector_raw``  the projector, before its L2 normalization   B x output_dim        as it is
``projector``      the projector, L2-normalized                 B x output_dim        as it is
``head_input``     the L2-normalized embedding (``l2_features``)  B x D               as it is
``classifier``     the logits                                   B x C                 as it is
=================  ===========================================  ====================  ==========================

``projector_raw`` and ``projector`` exist only with a projector (:data:`PROJECTOR_LAYERS`),
``head_input`` only with ``l2_features``. Any other module of ``model.named_modules()`` is
reachable by its dotted path (``encoder.layer4.1.conv2``) and pooled by the same rule
(:func:`pool_output`): a 4-D map is averaged over its positions, a 3-D token map over its tokens
after the model's ``num_prefix_tokens`` leading ones (class/register tokens), a 2-D output kept.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

#: The named layers of the controlled part of the network, in depth order (after the encoder stages).
CONTROLLED_LAYERS = ("encoder", "projector_raw", "projector", "head_input", "classifier")
LAST_CONV = "last_conv"
PROJECTOR_LAYERS = ("projector_raw", "projector")
LOGITS = "classifier"


def named_layers(net: nn.Module) -> "OrderedDict[str, nn.Module]":
    """``name -> module`` of a :class:`nc_control.ControlledNet` in the order they run (the table above)."""
    stages = OrderedDict(net.encoder.stages())
    for reserved in (LAST_CONV, *CONTROLLED_LAYERS):
        if reserved in stages:
            raise ValueError(f"encoder stage name {reserved!r} clashes with a ControlledNet layer name")
    last_conv = net.encoder.last_conv() if callable(getattr(net.encoder, "last_conv", None)) else None
    layers = OrderedDict(list(stages.items())[:-1])
    if last_conv is not None:
        layers[LAST_CONV] = last_conv
    layers.update(list(stages.items())[-1:])
    modules = {"encoder": net.encoder_out, "projector_raw": net.projector, "projector": net.projector_out,
               "head_input": net.head_input, "classifier": net.classifier}
    layers.update((name, modules[name]) for name in CONTROLLED_LAYERS if modules[name] is not None)
    return layers


def num_prefix_tokens(model: nn.Module) -> int:
    """Leading non-patch tokens of a token model: ``model.num_prefix_tokens`` if set, else that of
    the first submodule defining it (a timm VisionTransformer), else 0."""
    value = getattr(model, "num_prefix_tokens", None)
    if value is None:
        value = next((m.num_prefix_tokens for m in model.modules()
                      if isinstance(getattr(m, "num_prefix_tokens", None), int)), 0)
    return int(value)


def pool_output(output: torch.Tensor, prefix_tokens: int = 0) -> torch.Tensor:
    """One float32 vector per sample (a new tensor): GAP of a 4-D map, token mean (after
    ``prefix_tokens``) of a 3-D map, a 2-D output as it is."""
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"a hooked layer returned {type(output).__name__}; feature layers must return a tensor")
    out = output.float()
    if out.dim() == 4:
        return out.mean(dim=(2, 3))
    if out.dim() == 3:
        return out[:, prefix_tokens:].mean(dim=1)
    if out.dim() == 2:  # a copy: later in-place ops of the forward pass must not reach it
        return out.clone() if out is output else out
    raise ValueError(f"cannot pool a layer output of shape {tuple(output.shape)}; expected 2-, 3- or 4-D")
