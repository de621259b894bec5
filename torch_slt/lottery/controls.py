"""Sanity-check controls: is it the ticket's *mask*, its *weights*, or only its per-layer sparsity?

Each control is a copy of a ticket (any gated model, weak or strong) with one thing destroyed, keeping
the number of kept weights of every tensor exactly. Every one is a random permutation ``π`` of one
tensor's positions, drawn per tensor from a generator seeded with ``seed`` (the global RNG is untouched):

=============== ========================================== =====================================================
control         what changes                               from
=============== ========================================== =====================================================
``reinit``      weights: ``w ← w[π]`` over all positions   Frankle & Carbin 2019 ("random reinitialization"):
                (a fresh draw from the tensor's own initial the same mask with new weights from the same
                distribution), or ``init=`` your own init  distribution
``random_mask`` mask: ``m ← m[π]``, weights stay           Frankle & Carbin 2019 ("random sparse"), Frankle et
                                                           al. 2021 ("layerwise random shuffling" of the mask)
``shuffle``     mask and weights together: ``m ← m[π]``,   Su et al. 2020 ("layerwise rearrange"): the kept
                ``w ← w[π]``                               values survive, their wiring does not
``resample``    weights among the kept positions only      Su et al. 2020 ("layerwise weight shuffling"): the
                                                           wiring survives, which value sits where does not
=============== ========================================== =====================================================

Frankle et al., "Pruning Neural Networks at Initialization: Why are We Missing the Mark?", ICLR 2021
(https://arxiv.org/abs/2009.08576); Su et al., "Sanity-Checking Pruning Methods: Random Tickets can Win
the Jackpot", NeurIPS 2020 (https://arxiv.org/abs/2009.11094). A method whose tickets do no better than
``random_mask`` has found a per-layer sparsity, not a ticket.

``reinit`` and ``resample`` keep the ticket's gates (a learned mask stays learned); ``random_mask`` and
``shuffle`` give a fixed mask, recorded as ``"random"``. Call a control on the ticket *at its starting
weights* (for IMP: after rewinding), then train or evaluate it as the ticket.

Example:
    >>> import torch, torch_slt
    >>> model = torch_slt.apply(torch.nn.Sequential(torch.nn.Linear(6, 4)), "magnitude", sparsity=0.5)
    >>> other = control(model, "random_mask", seed=1)
    >>> int(other[0].weight_mask.sum()) == int(model[0].weight_mask.sum()) == 12
    True
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from torch_slt.core import api
from torch_slt.core.errors import SLTError
from torch_slt.core.masks import apply_masks, hard_masks, remove_gates
from torch_slt.lottery.config import CONTROLS
from torch_slt.lottery.rewind import capture, rewind


class ControlError(SLTError, ValueError):
    """An unknown control, or a model it cannot act on."""


def control(model: nn.Module, kind: str, *, seed: int = 0,
            init: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """A copy of the gated ``model`` with the control ``kind`` applied (see the module docstring).

    Args:
        model: a gated model (``torch_slt.apply``, an IMP round); not modified.
        kind: ``"reinit"``, ``"random_mask"``, ``"shuffle"`` or ``"resample"``.
        seed: seeds the permutations (and ``init``'s draws).
        init: for ``reinit`` only: re-initialise the *plain* network in place (e.g. the function that
            initialised it, such as ``torch_slt.init.kaiming_normal``) instead of permuting each tensor.
    """
    if kind not in CONTROLS:
        raise ControlError(f"control(): kind={kind!r} is not a control; choose from {', '.join(CONTROLS)}")
    if not api.is_gated(model):
        raise ControlError("control(): the model has no mask; apply a method (or run IMP) first")
    if init is not None and kind != "reinit":
        raise ControlError(f"control(): init= is for 'reinit' (fresh weights); {kind!r} permutes the ticket")
    twin = copy.deepcopy(model)
    if kind == "reinit":
        _reinit(twin, seed, init)
    elif kind == "resample":
        _permute_weights(twin, seed, kept_only=True)
    else:
        _permute_masks(twin, seed, move_weights=(kind == "shuffle"))
    return twin


def permutation(size: int, seed: int, salt: str) -> Tensor:
    """A permutation of ``range(size)`` from a generator of its own, seeded by ``(seed, salt)``."""
    digest = hashlib.sha256(f"torch_slt.lottery:{seed}:{salt}".encode()).digest()
    gen = torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little"))
    return torch.randperm(size, generator=gen)


def _weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {g.qualified: g.orig for g in api.gated_tensors(model)}


def _reinit(model: nn.Module, seed: int, init: Callable[[nn.Module], None] | None) -> None:
    if init is None:
        _permute_weights(model, seed, kept_only=False)
        return
    plain = remove_gates(copy.deepcopy(model))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        init(plain)
    rewind(model, capture(plain, iteration=0))


def _permute_weights(model: nn.Module, seed: int, kept_only: bool) -> None:
    masks = hard_masks(model)
    with torch.no_grad():
        for name, weight in _weights(model).items():
            flat = weight.view(-1) if weight.is_contiguous() else weight.reshape(-1)
            where = masks[name].reshape(-1).nonzero().view(-1) if kept_only else torch.arange(flat.numel())
            order = permutation(where.numel(), seed, name).to(flat.device)
            where = where.to(flat.device)
            values = flat[where][order]
            flat[where] = values
            if not weight.is_contiguous():
                weight.copy_(flat.view(weight.shape))


def _permute_masks(model: nn.Module, seed: int, move_weights: bool) -> None:
    masks = hard_masks(model)
    new_masks = {}
    with torch.no_grad():
        for name, weight in _weights(model).items():
            order = permutation(weight.numel(), seed, name)
            new_masks[name] = masks[name].reshape(-1)[order].view(masks[name].shape)
            if move_weights:
                weight.copy_(weight.reshape(-1)[order.to(weight.device)].view(weight.shape))
    kept = sum(int(m.sum()) for m in new_masks.values())
    total = sum(m.numel() for m in new_masks.values())
    remove_gates(model)
    apply_masks(model, new_masks, "random", sparsity=1.0 - kept / total, scope="layer", seed=seed)
