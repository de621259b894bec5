"""Exact top-k selection of weights to keep: the one implementation every score-based method uses.

* :func:`top_k_mask`: keep exactly ``k`` of a 1-d tensor's largest entries (``topk``, never a full
  sort; a histogram on CPU tensors in eager mode);
* :func:`keep_top`: the same ranked jointly over several tensors, at a sparsity;
* :func:`top_groups_mask`: whole groups of weights (structured gates), counted by their weights.

None of them reads a tensor back to the host on an accelerator or under ``torch.compile``: counts
are host ints worked out from shapes, and masks are built with ``scatter``/comparisons.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def keep_count(total: int, sparsity: float, rounding: str = "torch") -> int:
    """Number of weights kept when ``sparsity`` (fraction removed) of ``total`` is pruned.

    ``rounding="torch"`` follows ``torch.nn.utils.prune``: ``round(sparsity * total)`` entries are
    removed (Python's round, half to even). ``"floor"`` removes ``floor(sparsity * total)``, as
    hidden-networks, Synaptic-Flow and GraSP do with ``int(...)`` (the product is first rounded to 9
    digits, so that 0.29 * 100 removes 29, not 28). See ``docs/api.md#counting``.

    Example:
        >>> keep_count(10, 0.95), keep_count(10, 0.95, "floor"), keep_count(5, 0.3), keep_count(5, 0.3, "floor")
        (0, 1, 3, 4)
    """
    if rounding == "floor":
        return total - math.floor(round(sparsity * total, 9))
    if rounding != "torch":
        raise ValueError(f"keep_count: rounding={rounding!r} is not 'torch' or 'floor'")
    return total - round(sparsity * total)


def keep_top(scores: list[Tensor], sparsity: float) -> list[Tensor]:
    """Boolean masks keeping the highest scores, ranked jointly over all tensors.

    Exactly ``keep_count(total, sparsity)`` entries are kept, ties included: ``topk`` picks among
    tied scores instead of keeping every score equal to the threshold. A selection, never a full sort.
    """
    device = scores[0].device
    flat = torch.cat([s.detach().reshape(-1).to(device) for s in scores])
    keep = top_k_mask(flat, keep_count(flat.numel(), sparsity))
    masks, start = [], 0
    for s in scores:
        masks.append(keep[start:start + s.numel()].view(s.shape).to(s.device))
        start += s.numel()
    return masks


#: Below this many entries :func:`top_k_mask` is a plain ``topk``.
_HISTOGRAM_MIN = 65536


def top_k_mask(values: Tensor, k: int) -> Tensor:
    """Boolean mask of a 1-d float tensor keeping exactly ``k`` of its largest entries (no full sort).

    A ``topk`` over the smaller side (the ``k`` kept, or the ``n - k`` dropped), scattered into the
    mask: no host read, so it runs on any device and under ``torch.compile``. On a CPU tensor of at
    least :data:`_HISTOGRAM_MIN` entries in eager mode, the ``k``-th largest value is found instead with
    a 65536-bin histogram of the values' order-preserving 16-bit prefixes and a ``topk`` inside the one
    bin that holds it, then the mask is ``values > v`` plus, among entries equal to ``v``, the first ones
    in index order: on a CPU about 3x faster than a ``topk`` over the whole tensor (the dominant cost of
    ``edgepopup``'s forward); it reads a few counts back, which costs nothing on a CPU. NaN is not
    supported.

    Example:
        >>> top_k_mask(torch.tensor([0.3, -1.0, 2.0, 0.5]), 2).tolist()
        [False, False, True, True]
    """
    n = values.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=values.device)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=values.device)
    if n >= _HISTOGRAM_MIN and values.device.type == "cpu" and not torch.compiler.is_compiling():
        return _histogram_top_k(values, k)
    if k <= n - k:
        keep = torch.zeros(n, dtype=torch.bool, device=values.device)
        return keep.index_fill_(0, torch.topk(values, k, sorted=False).indices, True)
    keep = torch.ones(n, dtype=torch.bool, device=values.device)
    return keep.index_fill_(0, torch.topk(values, n - k, largest=False, sorted=False).indices, False)


def _histogram_top_k(values: Tensor, k: int) -> Tensor:
    """:func:`top_k_mask` on a large CPU tensor, through a histogram of the values' 16-bit prefixes."""
    n = values.numel()
    keep = torch.zeros(n, dtype=torch.bool)
    # float64 -> float32 is monotone, so the float32 prefixes still order the bins correctly.
    bits = values.to(torch.float32).contiguous().view(torch.int32)
    prefix = torch.bitwise_right_shift(bits, 16)
    # Negative floats: flip the magnitude bits, so that larger magnitudes get lower bins.
    flip = torch.bitwise_right_shift(bits, 31)
    flip &= 0x7FFF
    prefix ^= flip
    del flip
    prefix += 32768
    from_top = torch.bincount(prefix, minlength=65536).flip(0).cumsum(0)
    j = int(torch.searchsorted(from_top, k))          # bins 65535 - j .. 65535 hold >= k entries
    above = int(from_top[j - 1]) if j > 0 else 0
    band = values[prefix == 65535 - j]
    cut = torch.topk(band, k - above, sorted=False).values.min()
    torch.gt(values, cut, out=keep)
    missing = k - int(torch.count_nonzero(keep))   # (a bool .sum() would copy to int64 first)
    if missing > 0:
        keep[(values == cut).nonzero().view(-1)[:missing]] = True
    return keep


def top_groups_mask(scores: Tensor, sizes: Tensor, sparsity: float, total: int | None = None) -> Tensor:
    """Flags (1-d, on ``scores``' device) of the highest ``scores`` whose ``sizes`` (weights per group)
    add up to the fewest whole groups that keep ``1 - sparsity`` of all the weights.

    ``total`` is the number of weights (``sizes.sum()``), given as a host int so that nothing is read
    back from the device; ties are broken by index (a stable sort).

    Example:
        >>> top_groups_mask(torch.tensor([0.1, 0.9, 0.5]), torch.tensor([4.0, 2.0, 2.0]), 0.5).tolist()
        [False, True, True]
    """
    flat = scores.detach().reshape(-1)
    sizes = sizes.to(device=flat.device, dtype=torch.float64).reshape(-1)
    if total is None:
        total = int(sizes.sum())
    wanted = (1.0 - sparsity) * total
    if wanted <= 0:
        return torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    order = torch.argsort(flat, descending=True, stable=True)
    cumulative = torch.cumsum(sizes[order], 0)
    # the fewest groups whose weights reach ``wanted`` (a device scalar: never read back)
    count = torch.searchsorted(cumulative, torch.full((1,), wanted - 1e-9, dtype=torch.float64,
                                                      device=flat.device)) + 1
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(flat.numel(), device=flat.device))
    return rank < count
