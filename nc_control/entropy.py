"""The entropy regularizer that keeps the encoder embedding from collapsing."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from nc_control.normalize import l2_normalize


def _gathered_rows(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(the rows of every process, in rank order; index of this process's first row).

    ``torch.distributed.nn.functional.all_gather`` is differentiable: its backward sums, over
    all processes, the gradients that reach this process's rows. Every process must hold the
    same number of rows (the training samplers give every rank the same batch sizes).
    """
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(z), dim=0), dist.get_rank() * z.shape[0]


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

    ``global_batch=True`` under ``torch.distributed`` (several processes): the neighbours
    j(i) are searched among the rows of *all* processes (gathered, differentiably), and each
    process returns the mean over its own rows i. With equal shares and
    DistributedDataParallel's gradient averaging, N processes then train exactly as one
    process on the whole batch: the sum of the N losses is N times the global-batch loss, the
    gather's backward brings each distance's gradient to the process that owns the neighbour,
    and the average over processes divides the N back out. This is what the official CNN code
    computes (``nn.DataParallel``: the whole batch of 512 on one device). ``global_batch=False``
    (or one process): the neighbours come from the local batch only, as the official ViT code
    computes it under DistributedDataParallel.
    """

    def __init__(self, eps: float = 1e-8, global_batch: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.global_batch = global_batch

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        if e.dim() != 2:
            raise ValueError(f"EntropyRegularizer expects a B x d embedding batch, got shape {tuple(e.shape)}")
        gather = self.global_batch and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if e.shape[0] < 2 and not gather:
            raise ValueError(f"EntropyRegularizer needs at least 2 samples per batch to find neighbours, got {e.shape[0]}")
        with torch.autocast(device_type=e.device.type, enabled=False):
            z = l2_normalize(e.float(), eps=self.eps)
            candidates, offset = _gathered_rows(z) if gather else (z, 0)
            with torch.no_grad():
                sim = z @ candidates.T
                rows = torch.arange(z.shape[0], device=z.device)
                sim[rows, rows + offset] = float("-inf")
                nearest = sim.argmax(dim=1)
            dist_nn = torch.linalg.vector_norm(z - candidates[nearest], ord=2, dim=1)
            return -torch.log(dist_nn + self.eps).mean()

    def extra_repr(self) -> str:
        return f"eps={self.eps}, global_batch={self.global_batch}"
