"""Thin helpers over torch.distributed that degrade to identities in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group (e.g. under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from all ranks along dim 0, keeping gradients for the local part.

    Contrastive losses need every rank's batch as negatives; gradients flow back only into the
    local slice, which together with DDP's gradient averaging equals the single-process gradient
    of the same global batch (scaled by world size, which the caller's loss normalisation absorbs).
    """
    if not is_distributed():
        return x
    parts = [torch.zeros_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    parts[rank()] = x  # put the autograd-tracked local tensor back
    return torch.cat(parts, dim=0)  # (world*B, ...)


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from all ranks along dim 0 without gradients (queues, metrics)."""
    if not is_distributed():
        return x.detach()
    parts = [torch.zeros_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)  # (world*B, ...)
