"""One round of iterative magnitude pruning: remove the smallest surviving weights.

Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks", ICLR 2019
(https://arxiv.org/abs/1803.03635): after training, remove ``p`` of the weights that are still kept,
those with the smallest ``|w|``, then rewind the survivors. As in open_lth (``sparse_global.py``), a round
removes ``ceil(p * remaining)`` weights; the ranking is over the *trained* values, among the survivors only
(a removed weight never comes back). ``scope="global"`` ranks all tensors together (open_lth),
``"layer"`` each tensor alone (the original paper's code); a tensor with a rate of its own (the output
layer, at half the rate in the paper's fully connected nets) is pruned on its own either way.

Example:
    >>> import torch, torch_slt
    >>> from torch_slt.core.masks import apply_masks
    >>> layer = torch.nn.Sequential(torch.nn.Linear(5, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = layer[0].weight.copy_(torch.tensor([[0.5, -0.1, 0.3, -0.4, 0.2]]))
    >>> _ = apply_masks(layer, {"0.weight": torch.ones(1, 5, dtype=torch.bool)})
    >>> prune_survivors(layer, {"0.weight": 0.4})["0.weight"].tolist()
    [[True, False, True, True, False]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from torch_slt.core import api
from torch_slt.core.masks import hard_masks, narrow_masks

#: Rates are compared after rounding to this many digits, so that 0.2 * 10 removes 2, not 3.
_DIGITS = 9


def removal_count(rate: float, remaining: int) -> int:
    """Weights removed from ``remaining`` at ``rate``: ``ceil(rate * remaining)`` (open_lth), at most all.

    Example:
        >>> removal_count(0.2, 10), removal_count(0.2, 11), removal_count(0.1, 3)
        (2, 3, 1)
    """
    return min(remaining, math.ceil(round(rate * remaining, _DIGITS)))


def layer_rates(model: nn.Module, prune_rate: float, output_rate: float | None,
                scope: str) -> dict[str, float | None]:
    """``{tensor: rate}`` for every gated tensor: ``None`` means "ranked in the global pool".

    The output layer is the last gated tensor (``named_modules`` order). Its rate is ``output_rate``,
    or by default half ``prune_rate`` when every gated module is an ``nn.Linear``.
    """
    gated = [(g.qualified, g.module) for g in api.gated_tensors(model)]
    if output_rate is None:
        all_linear = all(isinstance(m, nn.Linear) for _, m in gated)
        output_rate = prune_rate / 2 if all_linear and len(gated) > 1 else prune_rate
    rates: dict[str, float | None] = {name: (None if scope == "global" else prune_rate) for name, _ in gated}
    if gated and output_rate != prune_rate:
        rates[gated[-1][0]] = output_rate
    return rates


def survivor_masks(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor],
                   rates: Mapping[str, float | None], pool_rate: float) -> dict[str, Tensor]:
    """The next masks: each tensor with a rate loses ``removal_count(rate, kept)`` of its smallest kept
    ``|w|``; the tensors with rate ``None`` lose ``removal_count(pool_rate, kept in the pool)`` ranked
    together. Pure function of its inputs (the tests call it with hand-set weights)."""
    new: dict[str, Tensor] = {}
    pool = [name for name, rate in rates.items() if rate is None]
    for name, rate in rates.items():
        if rate is not None:
            new.update(_keep_largest([name], weights, masks, rate))
    if pool:
        new.update(_keep_largest(pool, weights, masks, pool_rate))
    return {name: new[name] for name in rates}


def _keep_largest(names: list[str], weights: Mapping[str, Tensor], masks: Mapping[str, Tensor],
                  rate: float) -> dict[str, Tensor]:
    # Removed weights score -1 (below every |w|), so a selection of at most `remaining` keeps survivors only.
    scores = [torch.where(masks[n], weights[n].detach().abs().float(), -1.0).reshape(-1) for n in names]
    flat = torch.cat(scores)
    remaining = int(sum(int(masks[n].sum()) for n in names))
    keep = remaining - removal_count(rate, remaining)
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        chosen[torch.topk(flat, keep, sorted=False).indices] = True
    out, start = {}, 0
    for n in names:
        size = masks[n].numel()
        out[n] = chosen[start:start + size].view(masks[n].shape)
        start += size
    return out


def prune_survivors(model: nn.Module, rates: Mapping[str, float | None], pool_rate: float = 0.2
                    ) -> dict[str, Tensor]:
    """Narrow the fixed masks of ``model`` by one round of magnitude pruning (see the module docstring)
    and return the new masks. ``rates`` as from :func:`layer_rates`."""
    weights = {g.qualified: g.orig for g in api.gated_tensors(model)}
    masks = survivor_masks(weights, hard_masks(model), rates, pool_rate)
    narrow_masks(model, masks)
    return masks
