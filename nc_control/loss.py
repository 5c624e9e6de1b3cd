"""The training loss of the method, and the checks of its options.

Harun, Gallardo & Kanan (ICML 2025) train with

    L = CE(logits, y; label smoothing 0.1) + alpha * L_ent(encoder embedding),   alpha = 0.05,

where L_ent is the nearest-neighbour entropy term of :class:`nc_control.EntropyRegularizer`
(``--entropy_batch global``: neighbours searched over the batch of all processes; ``local``:
within each process's share). The cross-entropy is computed in float32 even under autocast.

``--loss nc`` replaces it by the neural-collapse loss of Haas, Yolland & Rabus (TMLR 2022),
:class:`nc_control.NCLoss` on the classifier's input and weight; the cross-entropy is then
computed without gradient, for the log only, and the entropy term must be off (alpha 0).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from nc_control.entropy import EntropyRegularizer
from nc_control.nc_loss import NCLoss

LOSSES = ("ce", "nc")
ENTROPY_BATCHES = ("global", "local")


def check_loss_options(loss: str, alpha: float, entropy_batch: str) -> None:
    """A ValueError (one line, naming the flag) for loss options that would be ignored or fail late."""
    for flag, value, choices in (("loss", loss, LOSSES), ("entropy_batch", entropy_batch, ENTROPY_BATCHES)):
        if value not in choices:
            raise ValueError(f"--{flag} must be one of {', '.join(choices)}, got {value!r}")
    if loss == "nc" and alpha != 0:
        raise ValueError("--alpha weights the entropy term of --loss ce; the NC loss has none, pass --alpha 0")


def control_loss(out: tuple, targets: torch.Tensor, entropy: torch.nn.Module, alpha: float,
                 label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CE(label smoothing) + alpha * entropy(encoder embedding) on the ``return_all`` output
    ``out = (encoder embedding, projection, logits)``; returns (loss, ce, entropy term)."""
    enc, _, logits = out
    ce = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    ent = entropy(enc) if alpha != 0 else enc.new_zeros((), dtype=torch.float32)
    return ce + alpha * ent, ce, ent


def build_loss(loss: str, alpha: float, label_smoothing: float, entropy_batch: str, net: torch.nn.Module) -> Callable:
    """``loss_fn(out, targets) -> (loss, ce, entropy term)`` for the training loop; ``net`` is the
    unwrapped model (its classifier, for ``loss='nc'``). Under DistributedDataParallel the NC loss
    measures collapse on each process's share of the batch."""
    check_loss_options(loss, alpha, entropy_batch)
    if loss == "ce":
        entropy = EntropyRegularizer(global_batch=entropy_batch == "global")
        return lambda out, targets: control_loss(out, targets, entropy, alpha, label_smoothing)
    criterion = NCLoss()

    def collapse_loss(out, targets):
        loss_value = criterion(net.classifier_input(out), targets, net.classifier.weight)
        with torch.no_grad():
            ce = F.cross_entropy(out[2].float(), targets, label_smoothing=label_smoothing)
        return loss_value, ce, torch.zeros_like(ce)
    return collapse_loss
