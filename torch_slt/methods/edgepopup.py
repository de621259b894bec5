r"""Edge-popup (``edgepopup``): learn a score per weight, keep the top-scoring fraction.

Ramanujan, Wortsman, Kembhavi, Farhadi, Rastegari, "What's Hidden in a Randomly Weighted Neural
Network?", CVPR 2020 (https://arxiv.org/abs/1911.13299); reference code ``allenai/hidden-networks``
(``utils/conv_type.py``, ``SubnetConv`` / ``GetSubnet``).

Each weight gets a score (``weight_scores``), initialised as the reference does with
``kaiming_uniform_(a=sqrt(5))``, i.e. :math:`U(-1/\sqrt{n_{in}}, 1/\sqrt{n_{in}})`. Every forward, train
and eval, keeps the weights whose :math:`|s|` is among the top ``1 - sparsity`` fraction: of each
tensor alone (``scope="layer"``, the default and the paper's rule) or of all the tensors gated by the
``apply`` call together (``scope="global"``). Exactly ``numel - round(sparsity * numel)`` weights are
kept, ties included: the selection is a ``topk`` (no full sort), which picks among tied scores instead
of keeping every score equal to the threshold. The backward is straight-through: the gradient reaching
the mask is passed to :math:`|s|`, so :math:`\partial L / \partial s = \partial L / \partial W_{eff}
\cdot W \cdot \mathrm{sign}(s)`. There is no penalty; the sparsity is fixed by ``sparsity``.

The reference trains the scores with SGD (lr 0.1, momentum 0.9, cosine, weight decay 1e-4 or 5e-4 on
the scores); ``sparsity`` here is the fraction **removed** (the reference's ``prune_rate`` is the
fraction kept).

Example:
    >>> import torch, torch_slt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> model = torch_slt.apply(model, "edgepopup", sparsity=0.5)
    >>> int(model[0].weight_mask.sum()), int(model[2].weight_mask.sum())
    (64, 24)
    >>> opt = torch.optim.SGD(torch_slt.mask_parameters(model), lr=0.1, momentum=0.9)
    >>> loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0]))
    >>> loss.backward(); opt.step()
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from torch_slt.core.validation import check_choice, check_sparsity, sparsity_or_amount
from torch_slt.core.base import LearnedMaskMethod
from torch_slt.core.registry import register_method
from torch_slt.core.targets import target_tensor
from torch_slt.core.schedule import register_clock
from torch_slt.core.selection import keep_count, top_k_mask


def keep_top_abs(scores: Tensor, k: int) -> Tensor:
    """Boolean mask (shape of ``scores``) keeping exactly ``k`` entries of largest ``|scores|``
    (:func:`torch_slt.core.selection.top_k_mask`: a ``topk``, never a full sort, no host read)."""
    return top_k_mask(scores.detach().abs().reshape(-1), k).view(scores.shape)


class _StraightThroughMask(torch.autograd.Function):
    """``weight * mask`` whose backward hands the mask's gradient to the scores (through ``|s|``)."""

    @staticmethod
    def forward(ctx, weight: Tensor, scores: Tensor, mask: Tensor) -> Tensor:
        ctx.save_for_backward(weight, scores, mask if ctx.needs_input_grad[0] else None)
        return weight * mask

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        weight, scores, mask = ctx.saved_tensors
        grad_weight = grad_scores = None
        if ctx.needs_input_grad[0]:
            grad_weight = grad_out * mask
        if ctx.needs_input_grad[1]:
            grad_scores = (grad_out * weight).to(scores.dtype).mul_(scores.sign())
        return grad_weight, grad_scores, None


class GlobalSelection:
    """The top-k over every tensor gated by one ``apply(..., scope="global")`` call.

    Shared by the hooks of that call. It keeps the gated modules (not their Parameters, which
    ``load_state_dict(assign=True)`` or ``.to()`` may replace) and writes one selection for all of
    them (cached), so one selection serves all layers per step. The
    selection is redone when the scores moved: after every optimizer step on them (the clock of
    :mod:`torch_slt.core.schedule`) and, in eager mode, when a score tensor's version counter changed
    (an edit by hand). No ``data_ptr()`` and no host read: a compiled forward traces it whole.
    """

    def __init__(self, sparsity: float, tensor_name: str = "weight") -> None:
        self.sparsity = sparsity
        self.key = f"{tensor_name}_scores"
        self.keys: list[str] = []             # per module: "<tensor>_scores" (targets may differ)
        self.modules: list[nn.Module] = []
        self.last_scores: list[Tensor] = []   # scores made at plan time / last seen on each module
        self.step = 0
        self.fresh = False
        self._versions: tuple | None = None
        register_clock(self)

    def __getstate__(self) -> dict:
        # The cache is derived state: recomputed after unpickling/deepcopy.
        return {**self.__dict__, "fresh": False, "_versions": None, "_masks": []}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        register_clock(self)

    def _scores(self) -> list[Tensor]:
        for i, module in enumerate(self.modules):
            current = module._parameters.get(self.keys[i] if i < len(self.keys) else self.key)
            if current is not None:
                self.last_scores[i] = current
        return self.last_scores

    def gate_parameters(self) -> list[Tensor]:
        return self._scores()

    def on_optimizer_step(self) -> None:
        self.step += 1
        self.fresh = False

    def masks(self) -> list[Tensor]:
        """Every member's mask of the current scores."""
        scores = self._scores()
        if not self._current(scores):
            device = scores[0].device
            flat = torch.cat([s.detach().reshape(-1).to(device) for s in scores])
            keep = keep_top_abs(flat, keep_count(flat.numel(), self.sparsity))
            self._masks = [m.view(s.shape).to(s.device)
                           for m, s in zip(keep.split([s.numel() for s in scores]), scores)]
            self.fresh = True
            if not torch.compiler.is_compiling():
                self._versions = tuple((id(s), s._version) for s in scores)
        return self._masks

    def _current(self, scores: list[Tensor]) -> bool:
        if not self.fresh or len(getattr(self, "_masks", ())) != len(scores):
            return False
        if torch.compiler.is_compiling():
            return True   # version counters cannot be read there; optimizer steps clear the flag
        return (self._versions == tuple((id(s), s._version) for s in scores)
                and all(m.device == s.device for m, s in zip(self._masks, scores)))


@register_method("edgepopup")
class EdgePopup(LearnedMaskMethod):
    """Edge-popup scores on every weight; see the module docstring.

    Args:
        sparsity: fraction of weights removed, in [0, 1). Required.
        scope: ``"layer"`` (default, as in the paper) keeps the top ``1 - sparsity`` of each tensor;
            ``"global"`` ranks all the tensors gated by the ``apply`` call together.
        amount: torch's name for ``sparsity`` (give one of the two).
    """

    description = "edge-popup (Ramanujan et al. 2020): keep the top |scores|, straight-through gradient"
    fields = ("scores",)
    relaxed_forward = False   # training runs the hard top-k mask itself (BatchNorm statistics match it)

    def __init__(self, sparsity: float | None = None, scope: str = "layer", *, amount: float | None = None,
                 _slot: tuple[GlobalSelection, int] | None = None) -> None:
        value, given = sparsity_or_amount(sparsity, amount, "edgepopup")
        self.sparsity = check_sparsity(value, "edgepopup", name=given)
        self.scope = check_choice("scope", scope, ("layer", "global"))
        self._slot = _slot

    @staticmethod
    def init_scores(weight: Tensor) -> nn.Parameter:
        """Scores shaped like ``weight``, drawn as the reference does (``kaiming_uniform_(a=sqrt(5))``)."""
        dtype = torch.promote_types(weight.dtype, torch.float32)
        scores = torch.empty(weight.shape, dtype=dtype, device=weight.device)
        if scores.dim() >= 2:
            nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
        else:  # a 1-d tensor has no fan-in: use its length
            bound = 1 / math.sqrt(max(1, scores.numel()))
            nn.init.uniform_(scores, -bound, bound)
        return nn.Parameter(scores)

    def plan(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[dict[str, Any]]:
        if self.scope == "layer":
            return [{} for _ in targets]
        group = GlobalSelection(self.sparsity)
        for target in targets:
            group.modules.append(target[1])
            group.keys.append(f"{getattr(target, 'tensor', 'weight')}_scores")
            group.last_scores.append(self.init_scores(target_tensor(target)))
        return [{"_slot": (group, i)} for i in range(len(targets))]

    def init_state(self, module: nn.Module, orig: Tensor, mask, importance_scores) -> None:
        key = f"{self._tensor_name}_scores"
        if self._slot is not None:
            group, index = self._slot
            expected = group.keys[index] if index < len(group.keys) else group.key
            if expected != key:
                raise ValueError(f"edgepopup: the global selection gates {expected[:-7]!r}, not "
                                 f"{self._tensor_name!r}")
            scores = group.last_scores[index]
        else:
            scores = self.init_scores(orig)
        module.register_parameter(key, scores)

    def clock(self) -> GlobalSelection | None:
        return None if self._slot is None else self._slot[0]

    def hard_mask(self, module: nn.Module) -> Tensor:
        if self._slot is not None:
            group, index = self._slot
            return group.masks()[index]
        scores = self.field(module, "scores")
        return keep_top_abs(scores, keep_count(scores.numel(), self.sparsity))

    def relaxed_weight(self, module: nn.Module, orig: Tensor, mask: Tensor) -> Tensor:
        # ``mask`` is this forward's top-k, selected once by LearnedMaskMethod.apply_mask.
        return _StraightThroughMask.apply(orig, self.field(module, "scores"), mask)
