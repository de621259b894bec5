"""Edge-popup's forward as the reference implementation writes it, for the speed benchmark only.

``allenai/hidden-networks`` (``utils/conv_type.py``: ``GetSubnet`` / ``SubnetConv``) computes, at every
forward of every layer::

    out = scores.abs().clone()
    _, idx = scores.abs().flatten().sort()          # a full O(n log n) sort
    j = int((1 - k) * scores.numel())
    out.flatten()[idx[:j]] = 0; out.flatten()[idx[j:]] = 1
    weight = weight * out                            # straight-through: d out / d scores = identity

This module reproduces that forward on any torch_slt target (``nn.Linear``, ``nn.Conv*``) with a
forward pre-hook, so ``bench/speed.py`` can time it beside ``torch_slt``'s ``edgepopup`` on the same
model. It is not part of the library.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GetSubnet(torch.autograd.Function):
    """The reference ``GetSubnet``: top-``k`` (kept fraction) of the scores by a full sort."""

    @staticmethod
    def forward(ctx, scores: Tensor, k: float) -> Tensor:
        out = scores.clone()
        _, idx = scores.flatten().sort()
        j = int((1 - k) * scores.numel())
        flat_out = out.flatten()
        flat_out[idx[:j]] = 0
        flat_out[idx[j:]] = 1
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        return g, None


class ReferenceSubnet:
    """Forward pre-hook: ``module.weight = weight_orig * GetSubnet(|scores|, k)`` at every forward."""

    def __init__(self, k: float) -> None:
        self.k = k

    def __call__(self, module: nn.Module, inputs) -> None:
        subnet = GetSubnet.apply(module.weight_scores.abs(), self.k)
        module.weight = module.weight_orig * subnet


def apply_reference_edgepopup(model: nn.Module, sparsity: float) -> list[nn.Parameter]:
    """Gate every default torch_slt target like the reference; return the score Parameters.

    Weights and every other parameter are frozen; scores are initialised as the reference does
    (``kaiming_uniform_(a=sqrt(5))``).
    """
    from torch_slt.core.targets import is_default_target

    for p in model.parameters():
        p.requires_grad_(False)
    scores = []
    for module in list(model.modules()):
        if not is_default_target(module):
            continue
        weight = module._parameters.pop("weight")
        module.register_parameter("weight_orig", weight)
        s = nn.Parameter(torch.empty_like(weight))
        nn.init.kaiming_uniform_(s, a=math.sqrt(5))
        module.register_parameter("weight_scores", s)
        hook = ReferenceSubnet(1.0 - sparsity)
        module.weight = weight * 1.0
        module.register_forward_pre_hook(hook)
        scores.append(s)
    return scores
