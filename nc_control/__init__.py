"""The method of Harun, Gallardo & Kanan (ICML 2025): control neural collapse layer by layer.

An entropy regularizer on the encoder embedding keeps the encoder from collapsing (better
transfer); a fixed simplex-ETF projector followed by L2 normalization forces collapse at the
projector (better OOD detection). :class:`ControlledNet` wires encoder -> [projector -> L2
norm] -> linear classifier and exposes every hookable layer in depth order. :class:`NCLoss` is
the neural-collapse loss of Haas, Yolland & Rabus (TMLR 2022), which drives the classifier's
input and weights towards collapse directly.
"""
from nc_control.config import NCConfig
from nc_control.entropy import EntropyRegularizer
from nc_control.etf import simplex_etf_matrix, simplex_etf_projector
from nc_control.nc_loss import NCLoss
from nc_control.network import ControlledNet
from nc_control.normalize import l2_normalize

__all__ = [
    "NCConfig",
    "EntropyRegularizer",
    "NCLoss",
    "simplex_etf_matrix",
    "simplex_etf_projector",
    "ControlledNet",
    "l2_normalize",
]
