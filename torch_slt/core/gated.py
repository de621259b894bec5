"""The public record of what torch_slt gates in a model: :class:`GatedTensor` and :func:`gated_tensors`.

This module sits at the bottom of the core (it imports only the gate protocol), so every other part of
the package, core or not, finds the gated tensors here instead of reaching for private names:

    >>> import torch, torch_slt
    >>> model = torch_slt.apply(torch.nn.Sequential(torch.nn.Linear(4, 3)), "stg")
    >>> [(g.qualified, g.method, tuple(g.mask.shape)) for g in torch_slt.gated_tensors(model)]
    [('0.weight', 'stg', (3, 4))]
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

from torch import Tensor, nn
from torch.nn.utils import prune

from torch_slt.core.base import SLTMethod
from torch_slt.core.errors import AlreadyGatedError

#: Plain attribute on the root model: ``{tensor name: method name}``, kept after finalize for report().
HISTORY_ATTR = "_slt_history"
#: ``{qualified tensor name: formulation label}`` (:mod:`torch_slt.core.formulation`), written by
#: ``finalize`` and ``load_ticket`` so that ``report`` still names the formulation after the gates left.
FORMULATION_ATTR = "_slt_formulation"


def qualified_name(module_name: str, tensor_name: str) -> str:
    """``"<module name>.<tensor>"`` (just the tensor for the root), the tensor's final state_dict key."""
    return f"{module_name}.{tensor_name}" if module_name else tensor_name


class GatedTensor(NamedTuple):
    """One tensor gated by torch_slt. Unpacks as ``(module_name, module, hook)``."""

    module_name: str
    module: nn.Module
    hook: SLTMethod

    @property
    def tensor_name(self) -> str:
        """The gated parameter's name on its module (``"weight"`` mostly)."""
        return self.hook._tensor_name

    @property
    def qualified(self) -> str:
        """``"<module>.<tensor>"``: the key the tensor has in the finalized state_dict."""
        return qualified_name(self.module_name, self.hook._tensor_name)

    @property
    def method(self) -> str:
        """The registered name of the method gating it."""
        return type(self.hook).name or type(self.hook).__name__

    @property
    def orig(self) -> nn.Parameter:
        """The original Parameter (``<tensor>_orig``, the same object as before ``apply``)."""
        return self.module._parameters[self.hook._tensor_name + "_orig"]

    @property
    def mask(self) -> Tensor:
        """The ticket's hard mask now (boolean, at the tensor's shape, no gradient)."""
        return self.hook.hard_mask(self.module).detach()


def gated_tensors(model: nn.Module) -> Iterator[GatedTensor]:
    """Yield a :class:`GatedTensor` for every tensor of ``model`` gated by torch_slt.

    Raises :class:`~torch_slt.core.errors.AlreadyGatedError` if a ``torch.nn.utils.prune`` method was
    stacked on top of a torch_slt gate, because torch then ignores the gate silently.
    """
    for module_name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SLTMethod):
                yield GatedTensor(module_name, module, hook)
            elif isinstance(hook, prune.PruningContainer) and any(
                    isinstance(h, SLTMethod) for h in hook._pruning_methods):
                raise AlreadyGatedError(
                    f"module {module_name!r}: a torch.nn.utils.prune method was stacked on a torch_slt "
                    f"gate, so torch now ignores the gate. Gate each tensor once: finalize first, then "
                    f"prune again."
                )


def record_gate_history(model: nn.Module, history: dict[str, str]) -> None:
    """Record ``{qualified tensor name: method name}`` as gated on ``model`` (a ticket rebuilt from a
    file keeps what its methods were, for :func:`torch_slt.report`)."""
    model.__dict__.setdefault(HISTORY_ATTR, {}).update(history)


def gate_history(model: nn.Module) -> dict[str, str]:
    """``{qualified tensor name: method name}`` of every tensor ever gated on ``model`` (also after
    :func:`torch_slt.finalize`); a copy."""
    return dict(model.__dict__.get(HISTORY_ATTR) or {})


def record_gate_formulations(model: nn.Module, labels: dict[str, str]) -> None:
    """Record ``{qualified tensor name: formulation label}`` on ``model`` (kept after finalize)."""
    model.__dict__.setdefault(FORMULATION_ATTR, {}).update(labels)


def gate_formulations(model: nn.Module) -> dict[str, str]:
    """``{qualified tensor name: formulation label}`` recorded on ``model``; a copy."""
    return dict(model.__dict__.get(FORMULATION_ATTR) or {})
