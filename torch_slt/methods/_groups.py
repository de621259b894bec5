"""What a method needs to gate groups of weights (``granularity=``): see :mod:`torch_slt.core.granularity`.

:class:`Grouped` is a mixin placed before the method's base class. It validates ``granularity``, works
out each target's :class:`~torch_slt.core.granularity.GroupLayout` in ``plan`` (attention heads need
the whole model) and gives the method three small helpers: the gate's shape, the weight viewed for a
broadcasting gate, and a per-group tensor expanded to the weight's shape. With the default
``granularity="weight"`` every helper is the identity, so per-weight methods pay nothing.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from torch_slt.core.granularity import GroupLayout, check_granularity, layout_for


class Grouped:
    """Mixin: one gate per group of weights; see the module docstring."""

    granularity: str = "weight"
    _layout: GroupLayout | None = None

    def _init_granularity(self, granularity: str, layout: GroupLayout | None) -> None:
        self.granularity = check_granularity(granularity, type(self).name or type(self).__name__)
        self._layout = layout

    def plan(self, model: nn.Module, targets: list) -> list[dict[str, Any]]:
        extras = super().plan(model, targets)
        if self.granularity == "weight":
            return extras
        return [{**e, "_layout": layout_for(model, t, self.granularity)} for e, t in zip(extras, targets)]

    def layout(self, orig: Tensor) -> GroupLayout:
        """This tensor's layout (per weight when the method was built outside ``apply``)."""
        if self._layout is None or self._layout.weight_shape != tuple(orig.shape):
            granularity = "weight" if self.granularity == "head" else self.granularity
            self._layout = GroupLayout.build(tuple(orig.shape), granularity)
        return self._layout

    def gate_shape(self, orig: Tensor) -> tuple[int, ...]:
        return self.layout(orig).gate_shape

    def per_weight(self, per_group: Tensor) -> Tensor:
        """A per-group tensor (mask, probability) at the weight's shape."""
        return per_group if self._layout is None else self._layout.expand(per_group)

    def weights_per_gate(self) -> int:
        return 1 if self._layout is None else self._layout.group_size
