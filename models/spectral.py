"""Soft spectral normalization of convolution weights, as in the DDU ResNets (Mukhoti, van
Amersfoort, Torr & Gal, "Deep Deterministic Uncertainty: A New Simple Baseline", CVPR 2023,
arXiv:2102.11582), also used by Haas, Yolland & Rabus, "Linking Neural Collapse and L2
Normalization with Improved Out-of-Distribution Detection in Deep Neural Networks", TMLR
(arXiv:2209.08378).

For a convolution weight ``W`` (out x in x k x k) let ``W_mat = W.reshape(out, in*k*k)`` and
``sigma = u^T W_mat v`` its largest singular value as estimated by power iteration
(Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018).
The convolution uses

    W_eff = W / max(1, sigma / coeff)

so ``sigma(W_eff) <= coeff`` while a weight whose ``sigma`` is already at most ``coeff`` is
left unchanged (the "soft" normalization of Behrmann et al., "Invertible Residual Networks",
ICML 2019, which DDU takes over). The bound holds up to the power-iteration error: the estimate
never exceeds the true value and lags it while ``u``, ``v`` converge (slowly when the top of the
spectrum is nearly degenerate). Every training-mode forward runs ``n_power_iterations`` (1,
as DDU) steps ``u <- normalize(W_mat v)``, ``v <- normalize(W_mat^T u)`` on the buffers
``u`` and ``v``, which live in the state_dict (``parametrizations.weight.0._u`` / ``._v``),
so a checkpoint restores the estimate exactly; eval-mode forwards reuse them without iterating.
The estimate is torch's own (:func:`torch.nn.utils.parametrizations.spectral_norm`, which
starts with 15 power iterations at construction, where DDU starts from random ``u``, ``v``);
only the final division differs.

Difference from DDU's code: DDU normalizes 1x1 convolutions this way (its ``spectral_norm_fc``)
but estimates, for 3x3 convolutions, the operator norm of the convolution itself on the fixed
training input shape (power iteration through ``conv2d`` / ``conv_transpose2d``) and divides by
``max(1, sigma_op / coeff) + 1e-5``. Here every convolution uses the reshaped matrix, which
does not depend on the input size (one model serves 28, 32 and 224 px). The reshaped norm bounds
the convolution's operator norm only up to the kernel size:
``||conv_W(x)|| <= k * sigma(W_mat) * ||x||`` (each input pixel enters at most k*k patches),
so a k x k layer is ``k * coeff``-Lipschitz rather than ``coeff``-Lipschitz.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

N_POWER_ITERATIONS = 1


def _no_autocast(device_type: str):
    """Autocast switched off on CPU/CUDA; nothing to switch off elsewhere (e.g. the meta device)."""
    if device_type in ("cpu", "cuda"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class SoftSpectralNorm(_SpectralNorm):
    """Parametrization ``W -> W / max(1, sigma(W_mat) / coeff)`` (see the module docstring).

    Subclasses torch's spectral-norm parametrization for its buffers ``_u`` / ``_v``, its
    initial power iterations and its in-place (DataParallel-safe) power method; only the
    scaling differs. The estimate runs in the weight's own dtype, outside autocast.
    """

    def __init__(self, weight: torch.Tensor, coeff: float, n_power_iterations: int = N_POWER_ITERATIONS) -> None:
        if weight.ndim < 2:
            raise ValueError(f"soft spectral normalization needs a weight with >= 2 dims, "
                             f"got shape {tuple(weight.shape)}")
        if not (math.isfinite(coeff) and coeff > 0):
            raise ValueError(f"the spectral normalization coefficient must be a finite number > 0, got {coeff!r}")
        super().__init__(weight, n_power_iterations=n_power_iterations, dim=0)
        self.coeff = float(coeff)

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """The current estimate ``u^T W_mat v`` (no power iteration)."""
        with _no_autocast(weight.device.type):
            return torch.vdot(self._u, torch.mv(self._reshape_weight_to_matrix(weight), self._v))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with _no_autocast(weight.device.type):
            weight_mat = self._reshape_weight_to_matrix(weight)
            if self.training:
                self._power_method(weight_mat, self.n_power_iterations)
            u = self._u.clone(memory_format=torch.contiguous_format)
            v = self._v.clone(memory_format=torch.contiguous_format)
            sigma = torch.vdot(u, torch.mv(weight_mat, v))
            return weight / torch.clamp(sigma / self.coeff, min=1.0)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}, n_power_iterations={self.n_power_iterations}"


def spectral_normalize_convs(module: nn.Module, coeff: float,
                             n_power_iterations: int = N_POWER_ITERATIONS) -> list[nn.Conv2d]:
    """Register :class:`SoftSpectralNorm` on the weight of every ``nn.Conv2d`` inside ``module``
    (call it after the weights are initialized); returns those convolutions."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        if parametrize.is_parametrized(conv, "weight"):
            raise ValueError(f"{conv} already has a weight parametrization; spectral normalization is registered once")
        parametrize.register_parametrization(conv, "weight", SoftSpectralNorm(conv.weight, coeff, n_power_iterations))
    return convs
