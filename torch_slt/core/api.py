"""The model-level API: apply, penalty, mask_parameters, finalize."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from torch_slt.core.validation import check_kwargs
from torch_slt.core.base import SLTMethod, refuse_if_pruned, refuse_if_uninitialized
from torch_slt.core.errors import AlreadyGatedError, NotGatedError
from torch_slt.core.registry import get_method
from torch_slt.core.targets import Selector, Target, select_targets

# Attributes torch_slt keeps on the root model; plain attributes, so never in the state_dict.
_FROZEN_ATTR = "_slt_frozen"      # {parameter name: requires_grad before apply froze it}
_HISTORY_ATTR = "_slt_history"    # {tensor name: method name}, kept after finalize for report()
_FORMULATION_ATTR = "_slt_formulation"  # {tensor name: formulation label}, written by finalize for report()


def apply(model: nn.Module, method: str | type[SLTMethod] = "stg", *, targets: Selector = None,
          exclude: Selector = None, freeze: bool | None = None, **kwargs: Any) -> nn.Module:
    """Gate the weights of ``model`` in place and return it.

    Every targeted tensor (a module's ``weight`` as an example) gets ``weight_orig`` (the same
    Parameter), a boolean ``weight_mask`` buffer, the method's learned Parameters (``weight_mu`` for
    ``stg``) and a forward pre-hook on its module that recomputes ``weight`` before each forward.

    Args:
        model: any ``nn.Module``.
        method: a registered name (see :func:`torch_slt.list_methods`) or a method class.
        targets: ``None`` (the ``weight`` of every ``nn.Linear``, ``nn.Conv1d/2d/3d`` and transformers
            ``Conv1D``, ``nn.MultiheadAttention``'s ``in_proj_weight``, the recurrent weights of
            ``nn.RNN/LSTM/GRU``), module or parameter names (exact, dotted suffix, glob or full regex:
            ``"fc1"``, ``"*.in_proj_weight"``, ``"rnn.weight_ih_l0"``) or a callable
            ``(module_name, module) -> bool`` or ``(module_name, param_name, module) -> bool``;
            see :mod:`torch_slt.core.targets`.
        exclude: same forms as ``targets``; matching modules or parameters are left alone.
        freeze: set ``requires_grad=False`` on every parameter that is not a gate tensor (weights,
            biases, norms). Defaults to True for learned-mask methods (a strong ticket), False for
            fixed-mask ones and for methods that train the weights with the mask (``cs``).
        **kwargs: the method's hyperparameters, e.g. ``lam=0.08`` for ``stg``.

    Raises:
        UnknownMethodError, TypeError, ValueError, NoTargetsError, AlreadyGatedError: on bad input;
        the model is then left exactly as it was.
        UnsupportedModelError: a target's weight is tied to another module's (the same Parameter).

    A target whose weight another module reads in its own ``forward`` (``nn.MultiheadAttention``'s
    ``out_proj``, ``nn.TransformerEncoderLayer``'s fast path) is also refreshed before that module
    runs; see :mod:`torch_slt.core.checks`.

    Example:
        >>> import torch, torch_slt
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> model = torch_slt.apply(model, "stg", lam=0.1)
        >>> sorted(n for n, _ in torch_slt.named_mask_parameters(model))
        ['0.weight_mu', '2.weight_mu']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"apply(): model must be an nn.Module, got {type(model).__name__}")
    cls = get_method(method)
    check_kwargs(cls, kwargs)
    if freeze is not None and not isinstance(freeze, bool):
        raise TypeError(f"apply(): freeze must be True, False or None, got {freeze!r}")
    prototype = cls(**kwargs)  # validates the hyperparameters before the model is touched
    selected = select_targets(model, targets, exclude)
    readers = _check_selected(model, selected)
    extras = dict(zip(selected, prototype.plan(model, selected)))
    return _gate(model, cls, selected, readers,
                 lambda target: cls.apply(target.module, target.tensor, **kwargs, **extras[target]),
                 (cls.learned and not cls.trains_weights) if freeze is None else freeze)


def _check_selected(model: nn.Module, selected: list[Target]) -> list:
    """Refuse targets that cannot be gated safely (already pruned, tied); find outside readers."""
    from torch_slt.core.checks import check_targets

    for target in selected:
        try:
            refuse_if_pruned(target.module, target.tensor)
        except AlreadyGatedError as err:
            raise AlreadyGatedError(f"apply(): module {target.name!r}: {err}") from None
        refuse_if_uninitialized(target.module, target.tensor, f"apply(): module {target.name!r}")
    return check_targets(model, selected)


def _gate(model: nn.Module, cls: type[SLTMethod], selected: list[Target], readers: list,
          install: Callable[[Target], SLTMethod], freeze: bool) -> nn.Module:
    """Gate every selected tensor with ``install(target) -> hook``: all of them or none."""
    from torch_slt.core.checks import install_readers

    applied: list[tuple[nn.Module, SLTMethod, nn.Parameter]] = []
    try:
        for target in selected:
            orig = target.module._parameters[target.tensor]
            applied.append((target.module, install(target), orig))
        install_readers(readers, {(id(m), h._tensor_name): h for m, h, _ in applied})
        if freeze:
            _freeze_non_gates(model)
    except BaseException:
        for module, hook, orig in reversed(applied):
            hook._undo(module, orig)
        raise
    history = model.__dict__.setdefault(_HISTORY_ATTR, {})
    history.update({t.qualified: cls.name for t in selected})
    if not cls.learned:  # a learned mask still moves; a fixed one is final
        _warn_if_layers_collapsed(selected, cls.name)
    return model


def _warn_if_layers_collapsed(selected: list[Target], method: str) -> None:
    """Warn when a mask keeps no weight of a tensor: the layer then passes nothing (layer collapse,
    a known failure of global one-shot pruning at high sparsity)."""
    empty = [t.name if t.tensor == "weight" else t.qualified for t in selected
             if not torch.count_nonzero(t.module._buffers[t.tensor + "_mask"])]
    if empty:
        warnings.warn(
            f"apply(): {method!r} keeps no weight of {', '.join(map(repr, empty))}: those layers output "
            f"only their bias and the network may be untrainable (layer collapse). Use a lower sparsity, "
            f"scope='layer' (if the ranking was global), or exclude those modules.", stacklevel=4)


def _apply_with(model: nn.Module, cls: type[SLTMethod], targets: Selector, *, freeze: bool,
                install: Callable[[Target], SLTMethod]) -> nn.Module:
    """:func:`apply` with a custom per-tensor ``install`` (used to re-create gates from a checkpoint)."""
    selected = select_targets(model, targets)
    return _gate(model, cls, selected, _check_selected(model, selected), install, freeze)


def _freeze_non_gates(model: nn.Module) -> None:
    gate_ids = {id(p) for p in mask_parameters(model)}
    # Record gated weights under the name they get back at finalize ("fc.weight", not "fc.weight_orig").
    final_names = {id(m._parameters[h._tensor_name + "_orig"]): _qualify(n, h._tensor_name)
                   for n, m, h in gated_tensors(model)}
    frozen = model.__dict__.setdefault(_FROZEN_ATTR, {})
    for name, param in model.named_parameters():
        if id(param) not in gate_ids and param.requires_grad:
            frozen.setdefault(final_names.get(id(param), name), True)
            param.requires_grad_(False)


def gated_tensors(model: nn.Module) -> Iterator[tuple[str, nn.Module, SLTMethod]]:
    """Yield ``(module name, module, hook)`` for every tensor gated by torch_slt.

    Raises if a ``torch.nn.utils.prune`` method was stacked on top of a torch_slt gate, because torch
    then ignores the gate silently.
    """
    for module_name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SLTMethod):
                yield module_name, module, hook
            elif isinstance(hook, prune.PruningContainer) and any(
                    isinstance(h, SLTMethod) for h in hook._pruning_methods):
                raise AlreadyGatedError(
                    f"module {module_name!r}: a torch.nn.utils.prune method was stacked on a torch_slt "
                    f"gate, so torch now ignores the gate. Gate each tensor once: finalize first, then "
                    f"prune again."
                )


def is_gated(model: nn.Module) -> bool:
    """Whether any tensor of ``model`` carries a torch_slt gate."""
    return next(gated_tensors(model), None) is not None


def named_mask_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``(qualified name, Parameter)`` for every learned gate tensor (``weight_mu``, scores, ...)."""
    for module_name, module, hook in gated_tensors(model):
        for field in hook.fields:
            key = f"{hook._tensor_name}_{field}"
            yield _qualify(module_name, key), module._parameters[key]


def mask_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learned gate Parameters, to hand to an optimizer:
    ``torch.optim.Adam(torch_slt.mask_parameters(model), lr=1e-2)``."""
    return [p for _, p in named_mask_parameters(model)]


def penalty(model: nn.Module) -> Tensor:
    r"""The sparsity penalty to add to the loss: :math:`\sum_t \lambda_t \sum_i P(z_{t,i} \ne 0) / N`.

    ``N`` is the number of weights gated by a method that has a penalty (``stg``, ``hardconcrete``),
    so with one ``lam`` this is ``lam`` times the expected fraction of those weights kept. It is
    computed in float32 at least, is differentiable in the gates only, and is a zero tensor when the
    model has no such gates.

    Gates applied with a ``sparsity`` target (``apply(model, "stg", sparsity=0.9)``) adapt their
    ``lam``: each call made in training mode with autograd enabled first takes one step on lam
    (see :mod:`torch_slt.methods._gates`), so call it once per optimisation step, as part of the loss.
    """
    gated = [(module, hook) for _, module, hook in gated_tensors(model)]
    _step_sparsity_targets(gated)
    terms, total = [], 0
    for module, hook in gated:
        expected = hook.expected_kept(module)
        if expected is None:
            continue
        kept, count = expected
        term = hook.penalty_lam(module) * kept
        if hasattr(term, "full_tensor"):
            # FSDP2 shards the gates into DTensors outside forward: all-reduce the partial sum
            # (differentiably) so the penalty is a plain tensor that adds to the task loss.
            term = term.full_tensor()
        terms.append(term)
        total += count
    if not terms:
        return torch.zeros((), device=_device_of(model))
    return torch.stack(terms).sum() / total


def _step_sparsity_targets(gated: list[tuple[nn.Module, SLTMethod]]) -> None:
    """One lam update per sparsity target (shared by the tensors of one ``apply`` call)."""
    groups: dict[int, tuple[Any, list]] = {}
    for module, hook in gated:
        target = getattr(hook, "sparsity_target", None)
        if target is not None:
            groups.setdefault(id(target), (target, []))[1].append((module, hook))
    for target, members in groups.values():
        target.step(members)


def finalize(model: nn.Module) -> nn.Module:
    """Make every gate permanent and return the model, now a standard ``nn.Module``.

    Each gated ``weight`` becomes a plain Parameter holding ``weight_orig * hard mask`` (the same
    Parameter object as before ``apply``); the hooks, masks and gate tensors are deleted and the
    ``requires_grad`` flags that ``apply(freeze=True)`` changed are restored. The state_dict then has
    exactly the keys of the unmodified model and loads into it with ``strict=True``; eval outputs equal
    those of the gated model in eval mode.

    Raises:
        NotGatedError: ``model`` carries no torch_slt gate.
        NonFiniteGateError: a gate holds NaN or infinity (e.g. after a step on a NaN batch); the model
            is left gated and unchanged, and the message names the tensors and the fix.
    """
    from torch_slt.core.finite import check_finite_gates
    from torch_slt.core.health import warn_about_ticket

    gated = list(gated_tensors(model))
    if not gated:
        raise NotGatedError(
            "finalize(): the model has no torch_slt gates; call torch_slt.apply(model, ...) first"
        )
    check_finite_gates(model, "finalize()")
    warn_about_ticket(model, "finalize()")
    record_formulations(model)
    for _, module, hook in gated:
        prune.remove(module, hook._tensor_name)
    params = dict(model.named_parameters())
    for name, flag in model.__dict__.pop(_FROZEN_ATTR, {}).items():
        if name in params:
            params[name].requires_grad_(flag)
    return model


def record_formulations(model: nn.Module) -> dict[str, str]:
    """Store the formulation label of every gated tensor on ``model`` (:mod:`torch_slt.core.formulation`),
    so that :func:`torch_slt.report` still names it after :func:`finalize` removed the gates."""
    from torch_slt.core.formulation import formulation

    labels = {_qualify(n, h._tensor_name): formulation(h) for n, _, h in gated_tensors(model)}
    model.__dict__.setdefault(_FORMULATION_ATTR, {}).update(labels)
    return labels


def _qualify(module_name: str, tensor_name: str) -> str:
    return f"{module_name}.{tensor_name}" if module_name else tensor_name


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
