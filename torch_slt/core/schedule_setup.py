"""Give a model's sparsity targets the length of the run that trains them, when the user did not.

``apply(model, "stg", sparsity=s)`` without ``total_steps=`` ramps the training sparsity over a fixed
default number of steps, which is right for no run in particular: a run much longer than the ramp
spends most of its steps at the final sparsity, a shorter one ends before the ticket's sparsity was
ever trained (the "ramp never trained" warning of :func:`torch_slt.finalize`). A trainer that drives
the run knows its length (``TrainingArguments.max_steps``, Lightning's
``trainer.estimated_stepping_batches``), so the integrations call :func:`set_total_steps` with it.

A ``total_steps`` the user gave is never changed: only targets whose ``total_steps`` is ``None`` are
set. The targets are found through :func:`torch_slt.core.api.gated_tensors`: every tensor gated with a
target carries it as ``hook.sparsity_target`` (one object shared by all tensors of one ``apply`` call,
so it is set once).
"""

from __future__ import annotations

from typing import Any, Iterator

from torch import nn


def sparsity_targets(model: nn.Module) -> Iterator[Any]:
    """Every distinct sparsity target of ``model``'s gates, in the order of the gated tensors."""
    from torch_slt.core.api import gated_tensors

    seen: set[int] = set()
    for _, _, hook in gated_tensors(model):
        target = getattr(hook, "sparsity_target", None)
        if target is not None and id(target) not in seen:
            seen.add(id(target))
            yield target


def set_total_steps(model: nn.Module, steps: int) -> bool:
    """Set ``total_steps`` to ``steps`` on every sparsity target of ``model`` that has none.

    Args:
        model: a gated model (an ungated one, or one without sparsity targets, is left alone).
        steps: the optimiser steps of the run that will train the gates (a positive int).

    Returns:
        True when at least one target was set (the caller then says so once), False when there was
        none to set (no target, or every target's ``total_steps`` was given by the user).

    Raises:
        ValueError: ``steps`` is not a positive int (the model is unchanged).

    Example:
        >>> import torch, torch_slt
        >>> model = torch_slt.apply(torch.nn.Sequential(torch.nn.Linear(4, 8)), "stg", sparsity=0.5)
        >>> set_total_steps(model, 200), set_total_steps(model, 300)
        (True, False)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"set_total_steps(): steps must be a positive int (the optimiser steps of the run), "
                         f"got {steps!r}")
    changed = False
    for target in sparsity_targets(model):
        if target.total_steps is None:
            target.total_steps = steps
            changed = True
    return changed
