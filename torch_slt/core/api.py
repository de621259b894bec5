"""The model-level API: apply, penalty, mask_parameters, finalize."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from torch_slt.core.validation import check_kwargs
from torch_slt.core.base import SLTMethod, refuse_if_pruned, refuse_if_uninitialized
from torch_slt.core.errors import AlreadyGatedError, NotGatedError, UnsupportedModelError
from torch_slt.core.registry import get_method
from torch_slt.core.gated import HISTORY_ATTR as _HISTORY_ATTR
from torch_slt.core.gated import GatedTensor, gated_tensors, record_gate_formulations
from torch_slt.core.gated import qualified_name as _qualify
from torch_slt.core.targets import Selector, Target, select_targets

# Attributes torch_slt keeps on the root model; plain attributes, so never in the state_dict.
# {local parameter name: requires_grad before apply froze it}, kept on the module that owns the
# parameter (not on the root), so finalizing any submodule, or the root after prune.remove took the
# gates off, or a model gated piece by piece, finds every flag it must restore.
_FROZEN_ATTR = "_slt_frozen"


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
    runs; see :mod:`torch_slt.core.readers`.

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
    readers = _check_selected(model, selected, cls)
    try:
        extras = dict(zip(selected, prototype.plan(model, selected)))
        return _gate(model, cls, selected, readers,
                     lambda target: cls.apply(target.module, target.tensor, **kwargs, **extras[target]),
                     (cls.learned and not cls.trains_weights) if freeze is None else freeze)
    except RuntimeError as err:  # _gate has undone every gate: the model is as it was
        if "meta" in str(err) and any(getattr(t.module._parameters.get(t.tensor), "is_meta", False)
                                       for t in selected):
            raise UnsupportedModelError(
                f"apply(): {cls.name!r} computes its mask at apply from tensor values (the weights, "
                f"scores, a random draw or a sparsity target's ranking), and the model lives on the meta "
                f"device, which holds shapes only. "
                f"Materialize it first (model.to_empty(device='cpu') then initialize the weights, or load a "
                f"checkpoint with load_state_dict(..., assign=True)), or gate with a method that needs no "
                f"values at apply ('stg', 'hardconcrete', 'supermask', 'cs' without sparsity=).") from err
        raise


def _check_selected(model: nn.Module, selected: list[Target], cls: type[SLTMethod]) -> list:
    """Refuse targets that cannot be gated safely (already pruned, tied, a user tensor under a name the
    gate creates); find outside readers."""
    from torch_slt.core.base import refuse_name_clash, refuse_sparse_gradient
    from torch_slt.core.readers import check_targets

    for target in selected:
        try:
            refuse_if_pruned(target.module, target.tensor)
        except AlreadyGatedError as err:
            raise AlreadyGatedError(f"apply(): module {target.name!r}: {err}") from None
        refuse_if_uninitialized(target.module, target.tensor, f"apply(): module {target.name!r}")
        refuse_name_clash(cls, target.module, target.tensor, f"apply(): module {target.name!r}")
        refuse_sparse_gradient(cls, target.module, target.tensor, f"apply(): module {target.name!r}")
    return check_targets(model, selected)


def _gate(model: nn.Module, cls: type[SLTMethod], selected: list[Target], readers: list,
          install: Callable[[Target], SLTMethod], freeze: bool) -> nn.Module:
    """Gate every selected tensor with ``install(target) -> hook``: all of them or none."""
    from torch_slt.core.readers import install_readers

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
    return _gate(model, cls, selected, _check_selected(model, selected, cls), install, freeze)


def _freeze_non_gates(model: nn.Module) -> None:
    gate_ids = {id(p) for p in mask_parameters(model)}
    # Gated weights are recorded under the name they get back at finalize ("weight", not "weight_orig").
    final_names = {id(m._parameters[h._tensor_name + "_orig"]): h._tensor_name
                   for _, m, h in gated_tensors(model)}
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))  # a tied parameter is recorded on its first owner only
            if id(param) not in gate_ids and param.requires_grad:
                record = module.__dict__.setdefault(_FROZEN_ATTR, {})
                record.setdefault(final_names.get(id(param), name), True)
                param.requires_grad_(False)


def restore_frozen(model: nn.Module) -> bool:
    """Give back the ``requires_grad`` flags ``apply(freeze=True)`` changed on ``model`` and its
    submodules; whether there was any to restore."""
    found = False
    for module in model.modules():
        record = module.__dict__.pop(_FROZEN_ATTR, None)
        if record is None:
            continue
        found = True
        for name, flag in record.items():
            param = module._parameters.get(name)
            if param is not None:
                param.requires_grad_(flag)
    return found


def is_gated(model: nn.Module) -> bool:
    """Whether any tensor of ``model`` carries a torch_slt gate."""
    return next(gated_tensors(model), None) is not None


def named_mask_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``(qualified name, Parameter)`` for every learned gate tensor (``weight_mu``, scores, ...)."""
    for module_name, module, hook in gated_tensors(model):
        for field in hook.fields:
            key = f"{hook._tensor_name}_{field}"
            yield _qualify(module_name, key), module._parameters[key]


def mask_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The learned gate Parameters, to hand to an optimizer:
    ``torch.optim.Adam(torch_slt.mask_parameters(model), lr=1e-2)``.

    An iterator, like ``nn.Module.parameters()`` (and :func:`named_mask_parameters`): wrap it in
    ``list(...)`` to count or reuse it. Until 0.2 this was a list; indexing it, its truth value and
    ``==`` with a list keep the list's answers for one release, with a ``FutureWarning``.
    """
    return _GateParameters([param for _, param in named_mask_parameters(model)])


class _GateParameters:
    """The iterator :func:`mask_parameters` returns. It also answers what code written for the old
    list asks of it (``params[0]``, ``if not params``, ``params == [...]``), warning, because a plain
    iterator would answer ``if not params`` with False, silently. No ``__len__``: ``list()`` would
    call it (as a length hint) and warn on correct code; ``len()`` raises ``TypeError`` instead."""

    __hash__ = object.__hash__

    def __init__(self, params: list[nn.Parameter]) -> None:
        self._params, self._next = params, 0

    def __iter__(self) -> _GateParameters:
        return self

    def __next__(self) -> nn.Parameter:
        if self._next >= len(self._params):
            raise StopIteration
        self._next += 1
        return self._params[self._next - 1]

    def _as_list(self, use: str) -> list[nn.Parameter]:
        warnings.warn(f"mask_parameters() returns an iterator, as nn.Module.parameters() does; {use} works "
                      f"as on the old list for one more release: use list(torch_slt.mask_parameters(model))",
                      FutureWarning, stacklevel=3)
        return self._params

    def __getitem__(self, index: Any) -> Any:
        return self._as_list("indexing it")[index]

    def __bool__(self) -> bool:
        return bool(self._as_list("its truth value"))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list):
            return self._as_list("comparing it with a list") == other
        return NotImplemented


def penalty(model: nn.Module) -> Tensor:
    r"""The sparsity penalty to add to the loss: :math:`\sum_t \lambda_t \sum_i P(z_{t,i} \ne 0) / N`.

    ``N`` is the number of weights gated by a method that has a penalty (``stg``, ``hardconcrete``),
    so with one ``lam`` this is ``lam`` times the expected fraction of those weights kept. It is
    computed in float32 at least, is differentiable in the gates only, and is a zero tensor when the
    model has no such gates.

    Calling it has no side effect: it never advances a schedule (sparsity targets and ``cs`` count
    optimizer steps, see :mod:`torch_slt.core.schedule`), so extra calls for logging change nothing.
    """
    from torch_slt.core.health import warn_if_gates_not_optimized

    gated = [(module, hook) for _, module, hook in gated_tensors(model)]
    if gated:
        warn_if_gates_not_optimized(model)   # once per model: an optimizer that misses the gates
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
    # gated tensors of 0 weights count nothing: their terms are zero, and 0 / 0 would be NaN
    return torch.stack(terms).sum() / max(total, 1)


def finalize(model: nn.Module) -> nn.Module:
    """Make every gate permanent and return the model, now a standard ``nn.Module``.

    Each gated ``weight`` becomes a plain Parameter holding ``weight_orig * hard mask`` (the same
    Parameter object as before ``apply``); the hooks, masks and gate tensors are deleted and the
    ``requires_grad`` flags that ``apply(freeze=True)`` changed on ``model`` and its submodules are
    restored (finalizing one submodule restores its own; the rest come back with the root's finalize,
    which also restores them when ``torch.nn.utils.prune.remove`` already took every gate off). Inside
    ``torch.inference_mode()`` the weights are still baked as normal tensors, trainable afterwards.
    The state_dict then has
    exactly the keys of the unmodified model and loads into it with ``strict=True``; eval outputs equal
    those of the gated model in eval mode.

    Raises:
        NotGatedError: ``model`` carries no torch_slt gate (and no flag of an earlier one to restore).
        NonFiniteGateError: a gate holds NaN or infinity (e.g. after a step on a NaN batch); the model
            is left gated and unchanged, and the message names the tensors and the fix.
    """
    from torch_slt.core.health import check_finite_gates
    from torch_slt.core.health import warn_about_ticket

    gated = list(gated_tensors(model))
    if not gated:
        if restore_frozen(model):  # torch's prune.remove took the gates off; the flags are still ours
            return model
        raise NotGatedError(
            "finalize(): the model has no torch_slt gates; call torch_slt.apply(model, ...) first"
        )
    check_finite_gates(model, "finalize()")
    warn_about_ticket(model, "finalize()")
    record_formulations(model)
    for _, module, hook in gated:
        prune.remove(module, hook._tensor_name)
    restore_frozen(model)
    return model


def record_formulations(model: nn.Module) -> dict[str, str]:
    """Store the formulation label of every gated tensor on ``model`` (:mod:`torch_slt.core.formulation`),
    so that :func:`torch_slt.report` still names it after :func:`finalize` removed the gates."""
    from torch_slt.core.formulation import formulation

    labels = {g.qualified: formulation(g.hook) for g in gated_tensors(model)}
    record_gate_formulations(model, labels)
    return labels


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
