"""Exact top-k selection of weights to keep, shared by every score-based method."""

from __future__ import annotations

import torch
from torch import Tensor


def keep_count(total: int, sparsity: float) -> int:
    """Number of weights kept when ``sparsity`` (fraction removed) of ``total`` is pruned.

    Follows ``torch.nn.utils.prune``: ``round(sparsity * total)`` entries are removed.
    """
    return total - round(sparsity * total)


def keep_top(scores: list[Tensor], sparsity: float) -> list[Tensor]:
    """Boolean masks keeping the highest scores, ranked jointly over all tensors.

    Exactly ``keep_count(total, sparsity)`` entries are kept, ties included: ``topk`` picks among
    tied scores instead of keeping every score equal to the threshold. A selection, never a full sort.
    """
    device = scores[0].device
    flat = torch.cat([s.detach().reshape(-1).to(device) for s in scores])
    k = keep_count(flat.numel(), sparsity)
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=device)
    if k > 0:
        keep[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = [], 0
    for s in scores:
        masks.append(keep[start:start + s.numel()].view(s.shape).to(s.device))
        start += s.numel()
    return masks
