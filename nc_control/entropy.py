"""The entropy regularizer that keeps the encoder embedding from collapsing."""
from __future__ import annotations

import torch
from torch import nn

from nc_control.normalize import l2_normalize


class EntropyRegularizer(nn.Module):
    """Kozachenko-Leonenko nearest-neighbour entropy loss on a batch of embeddings.

    For an embedding batch ``e`` (B x d), ``z_i = e_i / max(||e_i||, eps)``, the nearest other
    sample ``j(i) = argmax_{j != i} z_i . z_j`` and

        L_ent = -(1/B) sum_i log(||z_i - z_{j(i)}||_2 + eps).

    Minimizing it spreads the normalized embeddings over the sphere (maximizes their
    differential entropy estimate), as in Sablayrolles et al., "Spreading vectors for
    similarity search", ICLR 2019; Harun, Gallardo & Kanan (ICML 2025) add it with weight
    alpha = 0.05 to keep the encoder from collapsing. The nearest neighbour is chosen without
    gradient; the distance carries the gradient. Computed in float32 even under autocast.
    (The official code measures the distance with ``nn.PairwiseDistance(eps=1e-8)``, i.e.
    ``||z_i - z_j + 1e-8||``; the eps here sits outside the norm, a difference of order 1e-8.)
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        if e.dim() != 2:
            raise ValueError(f"EntropyRegularizer expects a B x d embedding batch, got shape {tuple(e.shape)}")
        if e.shape[0] < 2:
            raise ValueError(f"EntropyRegularizer needs at least 2 samples per batch to find neighbours, got {e.shape[0]}")
        with torch.autocast(device_type=e.device.type, enabled=False):
            z = l2_normalize(e.float(), eps=self.eps)
            with torch.no_grad():
                sim = z @ z.T
                sim.fill_diagonal_(float("-inf"))
                nearest = sim.argmax(dim=1)
            dist = torch.linalg.vector_norm(z - z[nearest], ord=2, dim=1)
            return -torch.log(dist + self.eps).mean()

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
