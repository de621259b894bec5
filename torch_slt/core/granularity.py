"""Structured gates: one gate per output neuron, convolution channel or attention head.

A gated tensor's gate has the *group* shape; :class:`GroupLayout` reshapes the weight so that the
gate broadcasts over every weight of its group, and expands a group mask back to the weight's shape
(the ``<tensor>_mask`` buffer, ``finalize`` and the report stay per weight). What a group is:

* ``"weight"``: every weight alone (the default; the layout is the identity);
* ``"neuron"`` / ``"channel"`` (the same rule, named for linear and convolutional layers): one gate
  per output row of the tensor (``weight[i]``; ``weight[:, i]`` for transformers' transposed
  ``Conv1D``), i.e. per output neuron or output channel;
* ``"head"``: one gate per attention head for the query/key/value projections of
  ``nn.MultiheadAttention`` (``in_proj_weight``), Hugging Face ViT/Swin (``query``, ``key``,
  ``value``, whose parent has ``num_attention_heads``) and timm's ViT (``qkv``, whose parent has
  ``num_heads``); the rows are laid out ``[q|k|v][head][head_dim]``. Other targets get neuron gates.

Structured gates follow Svirsky, Refael & Lindenbaum 2026 (arXiv 2602.09169), who gate neurons and
channels with stochastic gates to train less and infer faster. The penalty stays :math:`\\lambda`
times the expected fraction of *weights* kept (a gate counts for its group's weights), so ``lam`` and
``sparsity`` mean the same at every granularity.

Example:
    >>> import torch
    >>> layout = GroupLayout.build((4, 3), "neuron")
    >>> layout.gate_shape, layout.group_size
    ((4, 1), 3)
    >>> layout.expand(torch.tensor([[True], [False], [True], [False]])).sum().item()
    6
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from torch_slt.core.errors import SLTError
from torch_slt.core.selection import top_groups_mask

GRANULARITIES = ("weight", "neuron", "channel", "head")
_QKV_PACKED = ("qkv", "in_proj_weight")
_HEAD_PROJECTIONS = ("query", "key", "value", "q", "k", "v", "q_proj", "k_proj", "v_proj", "qkv",
                     "in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


class GranularityError(SLTError, ValueError):
    """An unknown granularity, or a tensor that cannot be split into the groups asked for."""


def check_granularity(granularity: object, who: str) -> str:
    if granularity not in GRANULARITIES:
        raise GranularityError(f"{who}: granularity={granularity!r} is not one of "
                               f"{', '.join(map(repr, GRANULARITIES))}")
    return str(granularity)


@dataclass(frozen=True)
class GroupLayout:
    """How one tensor of shape ``weight_shape`` splits into gated groups.

    ``view_shape`` is the shape the weight is viewed as so that a gate of ``gate_shape`` broadcasts
    over it; ``group_size`` is the number of weights per gate.
    """

    weight_shape: tuple[int, ...]
    view_shape: tuple[int, ...]
    gate_shape: tuple[int, ...]

    @staticmethod
    def build(weight_shape: tuple[int, ...], granularity: str, *, out_dim: int = 0,
              heads: tuple[int, int] | None = None) -> GroupLayout:
        """The layout of a tensor; ``heads = (number of heads, packed projections)`` for head gates."""
        shape = tuple(weight_shape)
        if granularity == "weight" or not shape:
            return GroupLayout(shape, shape, shape)
        if granularity == "head" and heads is not None:
            count, parts = heads
            rows = shape[0]
            if rows % (count * parts):
                raise GranularityError(
                    f"granularity='head': {rows} rows do not split into {parts} x {count} heads")
            view = (parts, count, rows // (count * parts), *shape[1:])
            return GroupLayout(shape, view, (1, count) + (1,) * (len(view) - 2))
        gate = tuple(n if d == out_dim else 1 for d, n in enumerate(shape))
        return GroupLayout(shape, shape, gate)

    @property
    def grouped(self) -> bool:
        return self.gate_shape != self.weight_shape

    @property
    def groups(self) -> int:
        return _numel(self.gate_shape)

    @property
    def group_size(self) -> int:
        return _numel(self.weight_shape) // max(1, self.groups)

    def view(self, weight: Tensor) -> Tensor:
        """``weight`` viewed so that a gate of ``gate_shape`` broadcasts over its groups."""
        return weight if self.view_shape == self.weight_shape else weight.reshape(self.view_shape)

    def expand(self, gate: Tensor) -> Tensor:
        """A per-group tensor (mask or probability) at the weight's shape (a view when possible)."""
        if not self.grouped:
            return gate
        return gate.expand(self.view_shape).reshape(self.weight_shape)

    def reduce(self, per_weight: Tensor) -> Tensor:
        """Sum a weight-shaped tensor over each group (to ``gate_shape``): an L1 norm of ``|w|``."""
        if not self.grouped:
            return per_weight
        return self.view(per_weight).sum_to_size(self.gate_shape)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def output_dim(module: nn.Module, tensor: str) -> int:
    """The dimension of ``module.<tensor>`` that indexes output units (1 for transformers' Conv1D)."""
    if tensor == "weight" and any(c.__name__ == "Conv1D" and c.__module__.startswith("transformers")
                                  for c in type(module).__mro__):
        return 1
    if tensor == "weight" and isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 1
    return 0


def attention_heads(model: nn.Module, module_name: str, module: nn.Module,
                    tensor: str) -> tuple[int, int] | None:
    """``(heads, packed projections)`` when ``module.<tensor>`` is a query/key/value projection.

    ``None`` for any other tensor (it then gets neuron gates under ``granularity="head"``).
    """
    if isinstance(module, nn.MultiheadAttention):
        if tensor in _HEAD_PROJECTIONS:
            return module.num_heads, 3 if tensor in _QKV_PACKED else 1
        return None
    if tensor != "weight" or not module_name:
        return None
    parent_name, _, leaf = module_name.rpartition(".")
    if leaf not in _HEAD_PROJECTIONS:
        return None
    parent = model.get_submodule(parent_name) if parent_name else model
    heads = getattr(parent, "num_attention_heads", None) or getattr(parent, "num_heads", None)
    if not isinstance(heads, int) or heads < 1:
        return None
    return heads, 3 if leaf in _QKV_PACKED else 1


def layout_for(model: nn.Module, target: tuple, granularity: str) -> GroupLayout:
    """The :class:`GroupLayout` of one target (``(name, module)`` with ``.tensor``)."""
    name, module = target[0], target[1]
    tensor = getattr(target, "tensor", "weight")
    weight = getattr(module, tensor)
    heads = attention_heads(model, name, module, tensor) if granularity == "head" else None
    return GroupLayout.build(tuple(weight.shape), granularity, out_dim=output_dim(module, tensor),
                             heads=heads)


def keep_top_groups(scores: list[Tensor], layouts: list[GroupLayout], sparsity: float) -> list[Tensor]:
    """Keep the highest-scoring groups until ``1 - sparsity`` of the weights are kept.

    ``scores[i]`` has ``layouts[i].gate_shape``; groups are ranked together and counted by their
    weights, so the kept fraction of weights is the smallest whole number of groups that reaches
    ``1 - sparsity``. Returns one boolean mask per tensor at its *weight* shape (on its device).
    """
    device = scores[0].device
    flat = torch.cat([s.detach().reshape(-1).to(device=device, dtype=torch.float64) for s in scores])
    sizes = torch.cat([torch.full((lay.groups,), lay.group_size, dtype=torch.float64, device=device)
                       for lay in layouts])
    total = sum(lay.groups * lay.group_size for lay in layouts)
    keep = top_groups_mask(flat, sizes, sparsity, total)
    masks, start = [], 0
    for s, lay in zip(scores, layouts):
        part = keep[start:start + lay.groups].view(lay.gate_shape).to(s.device)
        masks.append(lay.expand(part).clone())
        start += lay.groups
    return masks
