"""Say so when a learned ticket is useless or unfinished, instead of handing it out silently.

A gate method trained with a too small learning rate, or gates left out of the optimizer, end where
they started: with the paper's threshold rule every gate is still open, so the "ticket" is the dense
random network (chance accuracy on a frozen random net). A sparsity target whose schedule never ran
(``penalty`` not called) or stopped half way (training shorter than ``total_steps``) gives a ticket at
the requested sparsity that training never saw. The opposite failure, a mask that keeps nothing of a
gated tensor (every stg gate of a layer closed, a penalty so large that training removes everything,
``supermask`` before training, a threshold or a head granularity that keeps no row), makes that layer
output a constant (its bias) and, when every tensor is empty, the whole network. :func:`ticket_warnings`
lists such problems, for every method; :func:`torch_slt.finalize` and :func:`torch_slt.report` (on a
model in eval mode) warn with them. Nothing here runs in the training step.

An optimizer that does not hold the gates (built before ``apply``) is caught earlier, at the first
optimizer step, by :func:`warn_if_gates_not_optimized` (called from :func:`torch_slt.penalty`).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from torch_slt.core.errors import NonFiniteGateError
from torch_slt.core.finite import hook_tensors, message, nonfinite
from torch_slt.core.gated import gated_tensors, qualified_name

#: The fix printed with a ticket that kept every weight.
_DENSE_FIX = ("train the gates longer or with a larger learning rate (Adam 5e-2 is the gate methods' "
              "default), check that the optimizer holds torch_slt.mask_parameters(model), or give "
              "apply(..., sparsity=s) a target: its mask keeps exactly 1 - s of the weights at any learning rate")


#: The fix printed with a tensor (or a ticket) that keeps nothing.
_EMPTY_FIX = ("Lower the penalty (lam) or the threshold, give apply(..., sparsity=s) a target (it keeps "
              "exactly 1 - s), train the gates first if they are still at their initial value (supermask's "
              "scores start at 0, below its threshold), or exclude those modules.")


def ticket_warnings(model: nn.Module) -> list[str]:
    """The problems of ``model``'s gates, one sentence each (empty when there is none): tensors (or
    the whole ticket) that keep nothing, for every method; a learned ticket still dense or whose
    sparsity schedule did not run."""
    gated = list(gated_tensors(model))
    problems = _collapse_problems(gated) + _batchnorm_problems(model)
    learned = [(name, module, hook) for name, module, hook in gated if hook.learned]
    if not learned:
        return problems
    untargeted = [(n, m, h) for n, m, h in learned if getattr(h, "sparsity_target", None) is None]
    if untargeted and len(untargeted) == len(learned) and all(bool(h.hard_mask(m).all()) for _, m, h in untargeted):
        problems.append(f"the hard mask of every gated tensor keeps every weight, so the ticket is the dense "
                        f"random network, not a subnetwork: {_DENSE_FIX}")
    seen = set()
    for _, module, hook in learned:
        target = getattr(hook, "sparsity_target", None)
        if target is None or id(target) in seen:
            continue
        seen.add(id(target))
        note = hook.target_problem(module)
        if note:
            problems.append(note)
    return problems


def _collapse_problems(gated: list) -> list[str]:
    """A sentence for the gated tensors whose hard mask keeps no weight (one for the whole ticket when
    every tensor is empty)."""
    import torch

    with torch.no_grad():
        kept = [(qualified_name(n, h._tensor_name), type(h).name, int(torch.count_nonzero(mask)),
                 mask.numel()) for n, m, h in gated for mask in [h.hard_mask(m)]]
    kept = [row for row in kept if row[3]]  # a tensor with no weight at all has nothing to lose
    empty = [(name, method) for name, method, count, _ in kept if count == 0]
    if not empty:
        return []
    methods = ", ".join(sorted({repr(method) for _, method in empty}))
    if len(empty) == len(kept):
        return [f"the ticket keeps no weight at all ({methods}: every gated tensor's hard mask is empty), so "
                f"the network's output does not depend on its input. {_EMPTY_FIX}"]
    shown = ", ".join(repr(name) for name, _ in empty[:8]) + (f" and {len(empty) - 8} more"
                                                               if len(empty) > 8 else "")
    return [f"the hard mask keeps no weight of {shown} ({methods}), so those layers output only their "
            f"bias and the network's output may not depend on its input (layer collapse). {_EMPTY_FIX}"]


def _batchnorm_problems(model: nn.Module) -> list[str]:
    """A sentence when BatchNorm statistics were gathered under relaxed training masks (core.batchnorm)."""
    from torch_slt.core.batchnorm import stale_batchnorm

    stale = stale_batchnorm(model)
    if not stale:
        return []
    methods = ", ".join(sorted({repr(type(h).name) for _, _, h in gated_tensors(model) if h.relaxed_forward}))
    shown = ", ".join(repr(n) for n in stale[:4]) + (f" and {len(stale) - 4} more" if len(stale) > 4 else "")
    return [f"the running statistics of {len(stale)} BatchNorm layer(s) ({shown}) were gathered in training "
            f"under the sampled or relaxed training masks of {methods}, not under the ticket's hard mask, "
            f"so the ticket's eval-mode accuracy can collapse (a frozen ResNet-18: 26 % instead of 75 %). Call "
            f"torch_slt.recalibrate_batchnorm(model, train_batches) after training and before evaluating "
            f"(torch_slt.experiment.train.fit does it)"]


def warn_about_ticket(model: nn.Module, who: str) -> None:
    """Warn (``UserWarning``) with every problem :func:`ticket_warnings` finds."""
    for problem in ticket_warnings(model):
        warnings.warn(f"{who}: {problem}", UserWarning, stacklevel=3)


def _gate_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    return [pair for name, module, hook in gated_tensors(model) for pair in hook_tensors(name, module, hook)]


def nonfinite_gates(model: nn.Module) -> list[str]:
    """Qualified names of the gate tensors of ``model`` that hold a NaN or an infinity; empty when
    every one is finite (see :mod:`torch_slt.core.finite`). One device synchronisation when all are
    finite: run it per epoch, never per step."""
    return nonfinite(_gate_tensors(model))


def check_finite_gates(model: nn.Module, who: str) -> None:
    """Raise :class:`~torch_slt.core.errors.NonFiniteGateError` naming every non-finite gate tensor."""
    names = nonfinite_gates(model)
    if names:
        raise NonFiniteGateError(message(names, who), names)


# ------------------------------------------------------------------ gates left out of the optimizer
#: The fix printed when an optimizer steps without the gates.
_OPTIMIZER_FIX = ("build the optimizer after torch_slt.apply, over torch_slt.mask_parameters(model), e.g. "
                  "torch.optim.Adam(torch_slt.mask_parameters(model), lr=5e-2); an optimizer made before "
                  "apply holds the frozen weights, not the gates")

# id(model) -> watch state, for the models whose first optimizer step is still awaited.
_WATCHED: dict[int, dict[str, Any]] = {}
_HOOK: list[Any] = []  # the handle of the one global optimizer step hook, while a model is watched


def warn_if_gates_not_optimized(model: nn.Module) -> bool:
    """Warn once if the optimizer that trains ``model`` does not update its gates.

    Meant to be called at every :func:`torch_slt.penalty` (training mode, autograd on). The first
    call starts watching: torch's optimizer step hook notes every optimizer that steps afterwards and
    holds a parameter of ``model``. At the next call after such a step the check is made, once:

    * an optimizer stepped the model's parameters but holds none of some gates (the usual slip: built
      over ``model.parameters()`` before ``apply``): warns, naming how many and the fix;
    * the gates are in it but had no gradient when it stepped (the loss does not reach them, e.g. a
      forward under ``no_grad`` or on a copy of the model): warns.

    Nothing is said before an optimizer has stepped (gradient accumulation calls the penalty several
    times per step) nor for a loop without a ``torch.optim`` optimizer. Returns True when it warned.
    Cheap: after the check it returns at once (one dict lookup).
    """
    if not torch.is_grad_enabled() or not model.training:
        return False
    key = id(model)
    state = _WATCHED.get(key)
    if state is None:
        if model.__dict__.get("_slt_optimizer_checked"):
            return False
        _watch(model)
        return False
    if not state["steps"]:
        return False
    _unwatch(key)
    model.__dict__["_slt_optimizer_checked"] = True
    gates = _named_gates(model)
    held = state["held"]
    missing = [n for n, p in gates.items() if id(p) not in held]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        message = (f"the optimizer stepped but holds {len(missing)} of the {len(gates)} gate tensors not "
                   f"({shown}), so they never train and the ticket is the random start: {_OPTIMIZER_FIX}")
    elif state["no_grad"] and len(state["no_grad"]) == len(gates):
        message = ("the optimizer holds the gates but they had no gradient when it stepped: the loss "
                   "does not reach them (a forward under torch.no_grad, on another copy of the model, or "
                   "without the gates' hooks), so they never train")
    else:
        return False
    warnings.warn(f"torch_slt: {message}", UserWarning, stacklevel=3)
    return True


def _watch(model: nn.Module) -> None:
    """Start noting the optimizer steps that touch ``model``'s parameters."""
    key = id(model)
    params = {id(p) for p in model.parameters()}
    gates = {id(p) for p in _gate_parameters(model)}
    ref = weakref.ref(model, lambda _: _unwatch(key))
    _WATCHED[key] = {"ref": ref, "params": params, "gates": gates, "held": set(), "no_grad": set(),
                     "steps": 0}
    if not _HOOK:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _HOOK.append(register_optimizer_step_post_hook(_after_step))


def _named_gates(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{qualified name: Parameter}`` of every learned gate tensor (``weight_mu``, scores, ...)."""
    return {f"{g.qualified}_{field}": g.module._parameters[f"{g.tensor_name}_{field}"]
            for g in gated_tensors(model) for field in g.hook.fields}


def _gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(_named_gates(model).values())


def _after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global optimizer step hook: for every watched model, note what the stepped optimizer holds."""
    held = [p for group in optimizer.param_groups for p in group["params"]]
    ids = {id(p) for p in held}
    for state in list(_WATCHED.values()):
        if not ids & state["params"]:
            continue  # another model's optimizer
        state["steps"] += 1
        state["held"] |= ids & state["gates"]
        state["no_grad"] |= {id(p) for p in held if id(p) in state["gates"] and p.grad is None}


def _unwatch(key: int) -> None:
    _WATCHED.pop(key, None)
    if not _WATCHED and _HOOK:
        _HOOK.pop().remove()
