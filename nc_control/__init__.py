"""The method of Harun, Gallardo & Kanan (ICML 2025): control neural collapse layer by layer.

An entropy regularizer on the encoder embedding keeps the encoder from collapsing (better
transfer); a fixed simplex-ETF projector followed by L2 normalization forces collapse at the
projector (better OOD detection). :class:`ControlledNet` wires encoder -> [projector -> L2
norm] -> linear classifier; :mod:`nc_control.layers` names its hookable layers in depth order
and says how each is pooled; :mod:`nc_control.loss` is the training loss CE + alpha * L_ent.
:class:`NCLoss` is the neural-collapse loss of Haas, Yolland & Rabus (TMLR 2022), which drives
the classifier's input and weights towards collapse directly.
"""
from nc_control.config import NCConfig
from nc_control.entropy import EntropyRegularizer
from nc_control.etf import simplex_etf_matrix, simplex_etf_projector
from nc_control.layers import PROJECTOR_LAYERS, named_layers, pool_output
from nc_control.loss import build_loss, check_loss_options, control_loss
from nc_control.nc_loss import NCLoss
from nc_control.network import ControlledNet
from nc_control.normalize import l2_normalize

__all__ = [
    "NCConfig",
    "EntropyRegularizer",
    "NCLoss",
    "PROJECTOR_LAYERS",
    "build_loss",
    "check_loss_options",
    "control_loss",
    "named_layers",
    "pool_output",
    "simplex_etf_matrix",
    "simplex_etf_projector",
    "ControlledNet",
    "l2_normalize",
]
