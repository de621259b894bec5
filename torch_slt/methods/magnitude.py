"""Magnitude pruning at initialisation (``magnitude``): keep the weights with the largest ``|w|``.

The baseline of every pruning-at-initialisation comparison: Frankle & Carbin, "The Lottery Ticket
Hypothesis", ICLR 2019 (https://arxiv.org/abs/1803.03635), and Tanaka et al., "Pruning neural networks
without any data by iteratively conserving synaptic flow" (SynFlow), NeurIPS 2020, whose ``Mag`` pruner
this follows (global scope by default).

Example:
    >>> import torch, torch_slt
    >>> layer = torch.nn.Linear(4, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[0.1, -3.0, 0.2, 2.0]]))
    >>> layer = torch_slt.apply(layer, "magnitude", sparsity=0.5)
    >>> layer.weight_mask
    tensor([[False,  True, False,  True]])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from torch_slt.core.granularity import GroupLayout, keep_top_groups, layout_for
from torch_slt.methods._groups import Grouped

from torch_slt.core.base import FixedMaskMethod
from torch_slt.core.finite import check_finite_scores
from torch_slt.core.targets import target_tensor
from torch_slt.core.registry import register_method


@register_method("magnitude")
class Magnitude(Grouped, FixedMaskMethod):
    """Keep the ``1 - sparsity`` fraction of weights with the largest absolute value.

    Args:
        sparsity: fraction of weights removed, in [0, 1). Required.
        scope: ``"global"`` (default) ranks all targeted tensors together; ``"layer"`` each alone.
        amount: torch's name for ``sparsity`` (give one of the two).
        granularity: ``"weight"`` (default), ``"neuron"``/``"channel"`` or ``"head"``: rank whole
            groups by their L1 norm ``sum |w|`` and keep the best until ``1 - sparsity`` of the
            weights are kept (whole groups, so up to one group more); see
            :mod:`torch_slt.core.granularity`.

    Exactly ``keep_count(total, sparsity)`` weights are kept (ties broken by selection).
    ``torch_slt.apply`` leaves ``freeze=False`` for this method (the kept weights are meant to be trained
    afterwards); ``freeze=True`` makes it a strong-ticket baseline.
    """

    description = "keep the largest |w| (global or per layer), chosen once at apply"

    def __init__(self, sparsity: float | None = None, scope: str = "global", granularity: str = "weight", *,
                 amount: float | None = None, rounding: str = "torch", _layout: GroupLayout | None = None) -> None:
        super().__init__(sparsity, scope, amount=amount, rounding=rounding)
        self._init_granularity(granularity, _layout)
        if self.rounding != "torch" and self.granularity != "weight":
            raise ValueError(f"magnitude: rounding={rounding!r} counts single weights; with "
                             f"granularity={granularity!r} whole groups are kept (the fewest that reach "
                             f"1 - sparsity): leave rounding='torch'")

    def plan(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[dict[str, Any]]:
        if self.granularity == "weight":
            return super().plan(model, targets)
        # One score per group, its L1 norm; groups are kept whole, counted by their weights.
        layouts = [layout_for(model, t, self.granularity) for t in targets]
        scores = [lay.reduce(target_tensor(t).detach().abs()) for t, lay in zip(targets, layouts)]
        check_finite_scores(scores, [getattr(t, "qualified", t[0]) for t in targets], "magnitude")
        if self.scope == "global":
            masks = keep_top_groups(scores, layouts, self.sparsity)
        else:
            masks = [keep_top_groups([s], [lay], self.sparsity)[0] for s, lay in zip(scores, layouts)]
        return [{"mask": m, "_layout": lay} for m, lay in zip(masks, layouts)]

    def init_state(self, module: nn.Module, orig: Tensor, mask: Tensor | None,
                   importance_scores: Tensor | None) -> None:
        if mask is None and importance_scores is None and self.granularity != "weight":
            # Called on one module (torch_slt.prune.magnitude): rank this tensor's groups alone.
            layout = self.layout(orig)
            scores = layout.reduce(orig.detach().abs())
            check_finite_scores([scores], [f"{type(module).__name__}.{self._tensor_name}"], "magnitude")
            mask = keep_top_groups([scores], [layout], self.sparsity)[0]
        super().init_state(module, orig, mask, importance_scores)

    def scores(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[Tensor]:
        return [target_tensor(t).detach().abs() for t in targets]

    def tensor_scores(self, weight: Tensor) -> Tensor:
        return weight.detach().abs()
