"""Masks as data: read a gated model's hard masks, gate a model with given masks, narrow a fixed mask.

These are the primitives of iterative pruning (:mod:`torch_slt.lottery`) and of the sanity-check
controls, which decide masks themselves instead of asking a method to:

* :func:`hard_masks`: ``{"fc1.weight": bool tensor, ...}``, the masks every gate keeps now.
* :func:`apply_masks`: gate the named tensors of an ungated model with given masks, recorded as a
  fixed-mask method (``"magnitude"`` for iterative magnitude pruning, ``"random"`` for a random mask).
* :func:`narrow_masks`: replace the masks of fixed-mask gates by **sub-masks**, in place.
* :func:`remove_gates`: take the gates off and give every weight back its full, unmasked value.

**How narrowing fits "a tensor is gated once".** Iterative pruning does not stack gates: the tensor
keeps the one fixed-mask gate it got in round 0, and each round shrinks that gate's ``<tensor>_mask``
buffer to a subset of itself. ``weight_orig`` stays the same Parameter (an optimizer that holds it keeps
working), no hook is added, and ``report`` / ``finalize`` / ``save_file`` see an ordinary fixed mask.
A mask that would *re-open* a removed weight is refused: that is a different ticket, made by taking the
gates off first (:func:`remove_gates`) and applying the new masks.

Example:
    >>> import torch, torch_slt
    >>> from torch_slt.core.masks import apply_masks, hard_masks, narrow_masks
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
    >>> model = apply_masks(model, {"0.weight": torch.tensor([[True, True], [True, False]])})
    >>> model = narrow_masks(model, {"0.weight": torch.tensor([[True, False], [True, False]])})
    >>> hard_masks(model)["0.weight"].tolist()
    [[True, False], [True, False]]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from torch_slt.core import api
from torch_slt.core.base import FixedMaskMethod
from torch_slt.core.gated import HISTORY_ATTR, qualified_name
from torch_slt.core.errors import NotGatedError, SLTError
from torch_slt.core.registry import get_method


class MaskError(SLTError, ValueError):
    """A mask that does not fit the tensor it is meant for (name, shape, or not a sub-mask)."""


def hard_masks(model: nn.Module) -> dict[str, Tensor]:
    """``{qualified tensor name: boolean mask}`` of every gated tensor, in ``named_modules`` order.

    The masks are copies (changing them changes nothing in the model); ``True`` = kept.
    """
    return {qualified_name(name, hook._tensor_name): hook.hard_mask(module).detach().clone().bool()
            for name, module, hook in api.gated_tensors(model)}


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor], method: str = "magnitude",
                **config: Any) -> nn.Module:
    """Gate the tensors named in ``masks`` with exactly those masks and return ``model``.

    Args:
        model: a model whose named tensors are not gated yet.
        masks: ``{"fc1.weight": mask, ...}``, qualified parameter names (as in the finalized
            state_dict) to boolean (or 0/1) tensors of the parameter's shape; ``True`` = kept.
        method: the registered fixed-mask method the gates are recorded as (``report``, checkpoints):
            ``"magnitude"`` for masks chosen by weight magnitude, ``"random"`` for random masks.
        **config: hyperparameters recorded with each gate (e.g. ``sparsity=0.8``); the mask itself is
            not recomputed from them.

    Nothing is frozen (the weights of a weak ticket are trained). On any error the model is unchanged.
    """
    cls = get_method(method)
    if not issubclass(cls, FixedMaskMethod):
        raise MaskError(f"apply_masks(): method={method!r} learns its mask; give a fixed-mask method "
                        f"('magnitude' or 'random') to record given masks")
    params = dict(model.named_parameters())
    checked = {name: _checked_mask(name, mask, params) for name, mask in masks.items()}
    wanted = set(checked)

    def selector(module_name: str, param_name: str, module: nn.Module) -> bool:
        return qualified_name(module_name, param_name) in wanted

    def install(target: Any) -> FixedMaskMethod:
        hook = cls.__new__(cls)
        hook.__dict__.update(config)
        return hook._install(target.module, target.tensor, mask=checked[target.qualified])

    return api._apply_with(model, cls, selector, freeze=False, install=install)


def narrow_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Replace the masks of fixed-mask gates by sub-masks, in place, and return ``model``.

    Every mask must be a subset of the tensor's current mask (a removed weight stays removed); tensors
    not named keep their mask. All masks are checked before any is written.
    """
    gates = {qualified_name(name, hook._tensor_name): (module, hook)
             for name, module, hook in api.gated_tensors(model)}
    updates = []
    for name, mask in masks.items():
        if name not in gates:
            raise NotGatedError(f"narrow_masks(): {name!r} is not gated; gated tensors: "
                                f"{', '.join(gates) or '(none)'}. Gate the model first (apply_masks).")
        module, hook = gates[name]
        if not isinstance(hook, FixedMaskMethod):
            raise MaskError(f"narrow_masks(): {name!r} is gated by {type(hook).name!r}, whose mask is "
                            f"learned; only fixed masks are narrowed (finalize or remove_gates first)")
        buffer = module._buffers[hook._tensor_name + "_mask"]
        new = _checked_mask(name, mask, {name: buffer}).to(buffer.device)
        reopened = int((new & ~buffer.bool()).sum())
        if reopened:
            raise MaskError(f"narrow_masks(): the mask for {name!r} keeps {reopened} weight(s) that are "
                            f"already removed; a round may only remove more. To start from a different "
                            f"mask, call remove_gates(model) and apply_masks(model, masks).")
        updates.append((module, hook, buffer, new))
    for module, hook, buffer, new in updates:
        with torch.no_grad():
            buffer.copy_(new)
            # The weight seen before the next forward (the pre-hook recomputes it at every forward).
            setattr(module, hook._tensor_name, hook.apply_mask(module))
    return model


def remove_gates(model: nn.Module) -> nn.Module:
    """Take every gate off, leaving each weight at its full original value (the mask is *not* baked
    in, unlike :func:`torch_slt.finalize`), and return ``model``; the flags ``apply(freeze=True)``
    changed are restored. Used to re-mask a ticket's weights differently."""
    gated = list(api.gated_tensors(model))
    if not gated:
        if api.restore_frozen(model):  # torch's prune.remove took the gates off; the flags are still ours
            return model
        raise NotGatedError("remove_gates(): the model has no torch_slt gates")
    for _, module, hook in gated:
        hook._undo(module, module._parameters[hook._tensor_name + "_orig"])
    api.restore_frozen(model)
    history = model.__dict__.get(HISTORY_ATTR, {})
    for name, module, hook in gated:
        history.pop(qualified_name(name, hook._tensor_name), None)
    return model


def _checked_mask(name: str, mask: Any, tensors: Mapping[str, Tensor]) -> Tensor:
    if name not in tensors:
        raise MaskError(f"mask for {name!r}: the model has no such parameter; names are qualified "
                        f"parameter names as in model.state_dict(), e.g. {next(iter(tensors), 'fc.weight')!r}")
    if not isinstance(mask, Tensor):
        raise MaskError(f"mask for {name!r} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != tensors[name].shape:
        raise MaskError(f"mask for {name!r} has shape {tuple(mask.shape)}, the parameter has "
                        f"{tuple(tensors[name].shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise MaskError(f"mask for {name!r} must be boolean or hold only 0 and 1")
        mask = mask != 0
    return mask.to(tensors[name].device)
