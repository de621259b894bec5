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
"""

from __future__ import annotations

import warnings

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
    problems = _collapse_problems(gated)
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
