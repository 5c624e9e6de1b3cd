"""L2 normalization of embeddings."""
from __future__ import annotations

import torch


def l2_normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise L2 normalization ``x / max(||x||_2, eps)`` over the last dimension.

    This is the convention of ``torch.nn.functional.normalize`` that the official NC-OOD code
    uses after the projector (eps 1e-8): the norm is clamped from below, not shifted, so a
    row with norm above ``eps`` gets exactly unit norm and an all-zero row stays zero.
    float16 / bfloat16 inputs (e.g. under autocast) are normalized and returned in float32,
    so the unit norm holds to float32 precision.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    norm = torch.linalg.vector_norm(x, ord=2, dim=-1, keepdim=True)
    return x / norm.clamp_min(eps)
