"""Where a scheduled gate's clock ticks: once per optimizer step that updates its gates.

Some methods change with training time: a sparsity target ramps its sparsity up (``stg``,
``hardconcrete``), ``cs`` anneals its temperature, a global edge-popup selection must follow its
scores. torch itself ties such clocks to the optimizer: ``LRScheduler.step()`` counts optimizer steps,
and ``BatchNorm``'s ``num_batches_tracked`` counts training forwards. torch_slt follows the
optimizer, through torch's global hook :func:`torch.optim.optimizer.register_optimizer_step_post_hook`:

* every optimizer step that holds one of a clock's gate Parameters advances it by one, so gradient
  accumulation (several forwards per step) follows the schedule in optimizer steps, and a step
  skipped by ``GradScaler`` (inf gradients) does not count;
* extra forwards (logging, evaluation) and extra :func:`torch_slt.penalty` calls never move it;
* the loop ``loss = task_loss + torch_slt.penalty(model); loss.backward(); opt.step()`` needs no change;
* the work a new step needs (a new selection) is done here, eagerly, outside the forward, so a
  ``torch.compile``-d forward only reads tensors that are updated in place.

An optimizer that is not a :class:`torch.optim.Optimizer` (a hand-written update) does not tick the
clock; :func:`torch_slt.report` and :func:`torch_slt.finalize` then warn that the schedule never ran.

Example:
    >>> import torch, torch_slt
    >>> model = torch_slt.apply(torch.nn.Linear(4, 2), "stg", sparsity=0.5, total_steps=10)
    >>> opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=1e-2)
    >>> torch_slt.penalty(model).backward(); opt.step()
    >>> next(torch_slt.core.schedule.clocks(model)).step
    1
"""

from __future__ import annotations

import weakref
from typing import Any, Iterable, Iterator, Protocol

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook


class Clock(Protocol):
    """What the optimizer hook drives: an object that owns gate Parameters and ticks with them."""

    #: Optimizer steps taken so far (a host int, saved with the ``state_dict``).
    step: int

    def gate_parameters(self) -> Iterable[nn.Parameter]:
        """The Parameters whose optimizer step advances this clock."""

    def on_optimizer_step(self) -> None:
        """One optimizer step that updated this clock's gates has just finished."""


_clocks: weakref.WeakSet = weakref.WeakSet()
_hook_handle: Any = None


def register_clock(clock: Clock) -> None:
    """Have every optimizer step that holds one of ``clock``'s gate Parameters call it."""
    global _hook_handle
    _clocks.add(clock)
    if _hook_handle is None:
        _hook_handle = register_optimizer_step_post_hook(_after_optimizer_step)


def unregister_clock(clock: Clock) -> None:
    _clocks.discard(clock)


def _after_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if not _clocks:
        return
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for clock in list(_clocks):
        if any(id(p) in stepped for p in clock.gate_parameters()):
            clock.on_optimizer_step()


def clocks(model: nn.Module) -> Iterator[Clock]:
    """Every distinct clock of ``model``'s gates (one per ``apply`` call that has a schedule)."""
    from torch_slt.core.gated import gated_tensors

    seen: set[int] = set()
    for record in gated_tensors(model):
        clock = record.hook.clock()
        if clock is not None and id(clock) not in seen:
            seen.add(id(clock))
            yield clock
