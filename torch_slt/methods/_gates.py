r"""What the gate methods (``stg``, ``hardconcrete``) share: ``lam``, ``threshold`` and sparsity targets.

A gate method has a penalty: :func:`torch_slt.penalty` returns :math:`\lambda` times the expected
fraction of gated weights kept, :math:`\lambda \sum_i P(z_i \ne 0) / N`. With ``lam`` alone (the
paper's formulation) the hard mask is the threshold rule :math:`P(z \ne 0) > 0.5` (``mu > 0`` for stg)
and the sparsity is whatever that penalty weight gives.

How a sparsity target works
---------------------------
``apply(model, "stg", sparsity=s, total_steps=T)`` makes the sparsity a hard constraint on the
*ranking* of the gates instead of a number that a penalty weight has to hit:

* **Exact selection.** The mask keeps the top :math:`k_t = (1 - s_t) N` gates of the whole ``apply``
  call by their score (``mu`` for stg, ``log_alpha`` for hardconcrete), so every layer finds its own
  density, as with a fixed ``lam``. Eval mode, :func:`torch_slt.report` and :func:`torch_slt.finalize`
  use :math:`s_t = s`: the ticket has exactly :math:`s` of its weights removed (``round(s N)``, as
  ``torch.nn.utils.prune``), whatever the learning rate.
* **Gradual schedule.** In training the forward keeps the selected gates only (the others are off),
  with the sparsity :math:`s_t = s\,(1 - (1 - t / (rT))^3)` for :math:`t < rT` and :math:`s` after it:
  the cubic schedule of gradual pruning (Zhu & Gupta 2017, https://arxiv.org/abs/1710.01878), with
  ``ramp`` :math:`r` = 0.5 by default. :math:`t` counts optimizer steps that update the gates
  (:mod:`torch_slt.core.schedule`: gradient accumulation counts once per step, extra forwards and
  ``penalty()`` calls never); without ``total_steps`` the ramp lasts :data:`DEFAULT_RAMP_STEPS`
  steps, and ``report``/``finalize`` warn if training stopped before it ended.
* **Straight-through gradient.** The gates that the selection turns off still receive the gradient
  they would get if they were on (as edge-popup's scores do), so a gate can re-enter the selection.
* **The penalty shapes the ranking.** ``lam`` keeps its meaning: the penalty pushes down the scores of
  the gates the task does not need, layer against layer. With a target it defaults to
  :func:`target_lam` (0.1 at s = 0.5, 8.1 at 0.9, 19 at 0.95). When the penalty has pushed the
  selection's cut below the paper's threshold, the training gates are sampled from the scores shifted
  up by the difference, so a selected gate is on with probability above 0.5 (as under ``mu > 0``) and
  the training forward matches the ticket.

Why not adapt :math:`\lambda` to reach the target (the 0.1 design, and constrained-L0 dual ascent)?
The gates answer a change of :math:`\lambda` only as fast as the optimiser moves them, about ``lr``
per Adam step, so any controller of :math:`\lambda` has to know the learning rate: measured on
Fashion-MNIST, a controller tuned for Adam 5e-2 wound :math:`\lambda` up to thousands at 1e-2, closed
half the gates at once and ruined the ticket. The selection reaches its sparsity at every step by
construction, and the learning rate only decides how well the gates are ranked (numbers in
``docs/methods/stg.md`` and ``bench/results/targets.md``).

The schedule and the selections belong to one :class:`~torch_slt.methods._target.SparsityTarget` per
``apply`` call. Its step count is a host int; a ``state_dict`` records it in ``<tensor>_step`` (with
the window and the cut) next to the training selection ``<tensor>_window``, so a ``state_dict`` saved
mid-schedule resumes exactly; both disappear at :func:`torch_slt.finalize`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from torch_slt.core.validation import (check_fraction, check_nonnegative, check_optional_positive_int,
                                       check_probability, check_sparsity, sparsity_or_amount)
from torch_slt.core.base import LearnedMaskMethod
from torch_slt.methods._target import DEFAULT_RAMP, DEFAULT_RAMP_STEPS, REFRESH_STEPS, SparsityTarget

#: The paper's default penalty weight (without a sparsity target).
DEFAULT_LAM = 0.1


def target_lam(sparsity: float) -> float:
    """Default ``lam`` with a sparsity target: ``min(0.1 * odds**2, odds)`` with ``odds = s / (1 - s)``.

    The selection fixes the sparsity; the penalty shapes which gates win it. At high sparsity a penalty
    whose own equilibrium is near the target ranks the gates by how much the task needs them, layer
    against layer, as a fixed-lam run does; at low sparsity a strong penalty only adds noise. This gives
    the paper's 0.1 at s = 0.5, 0.54 at 0.7, 8.1 at 0.9 and 19 at 0.95, the values that did best on the
    digits MLP (3 seeds, Adam 1e-2 and 5e-2, cosine): against lam = 0.1, +2.5 to +13.7 points at 0.9-0.95;
    against lam = odds, +0.7 to +3.8 at 0.7 (``docs/methods/stg.md``).
    """
    odds = sparsity / (1.0 - sparsity)
    return min(DEFAULT_LAM * odds * odds, odds)


class GateMethod(LearnedMaskMethod):
    """Base of the gate methods: a penalty weight ``lam``, a ``threshold`` on :math:`P(z \\ne 0)` for
    the hard mask, and an optional sparsity target (module docstring). Subclasses provide the gates:
    :meth:`init_state`, :meth:`gated_weight`, :meth:`threshold_mask` and :meth:`prob_nonzero`."""

    def __init__(self, lam: float | None = None, threshold: float = 0.5, sparsity: float | None = None, *,
                 amount: float | None = None, total_steps: int | None = None, ramp: float = DEFAULT_RAMP,
                 _target: SparsityTarget | None = None) -> None:
        who = type(self).name or type(self).__name__
        value, given = sparsity_or_amount(sparsity, amount, who)
        self.sparsity = check_sparsity(value, who, required=False, name=given)
        if lam is None:
            lam = DEFAULT_LAM if self.sparsity is None else target_lam(self.sparsity)
        self.lam = check_nonnegative("lam", lam, who)
        self.threshold = check_probability("threshold", threshold, who)
        self.total_steps = check_optional_positive_int("total_steps", total_steps, who)
        self.ramp = check_fraction("ramp", ramp, who)
        if _target is None and self.sparsity is not None:
            _target = SparsityTarget(self.sparsity, self.total_steps, self.ramp)
        self.sparsity_target = _target

    def plan(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[dict[str, Any]]:
        # One target object for the whole apply() call: one selection over all the tensors it gates.
        if self.sparsity_target is None:
            return [{} for _ in targets]
        return [{"_target": self.sparsity_target} for _ in targets]

    # ------------------------------------------------------------------ target state
    def clock(self) -> SparsityTarget | None:
        return self.sparsity_target

    def init_target_state(self, module: nn.Module, orig: Tensor) -> None:
        """Register the target's buffers on ``module`` and join the target's members, when a target is set.

        ``<tensor>_step`` (float64: [steps taken, first step of the training selection or -1, its cut])
        is the checkpoint record of the schedule; ``<tensor>_window`` holds the training selection.
        """
        target = self.sparsity_target
        if target is None:
            return
        name = self._tensor_name
        module.register_buffer(f"{name}_step", torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64,
                                                            device=orig.device))
        module.register_buffer(f"{name}_window", torch.ones(self.gate_shape(orig), dtype=torch.bool,
                                                            device=orig.device))
        module.register_state_dict_pre_hook(_SaveSchedule(self))
        module.register_load_state_dict_pre_hook(_LoadSchedule(self))
        target.members.append((module, self))
        target.window, target.ticket_fresh = None, False   # a new member: both selections are redone

    def steps_taken(self, module: nn.Module) -> int:
        """Optimizer steps counted by the sparsity target so far (0 without a target)."""
        return 0 if self.sparsity_target is None else self.sparsity_target.step

    def target_problem(self, module: nn.Module) -> str | None:
        """Why this sparsity target's ticket is not what training made, if it is not (for a warning)."""
        target = self.sparsity_target
        steps = self.steps_taken(module)
        if steps == 0:
            return ("the sparsity target's schedule never advanced: no torch.optim optimizer stepped the "
                    "gates, so they were never trained towards the target; hand "
                    "torch_slt.mask_parameters(model) to the optimizer and call opt.step() in training")
        if steps < target.ramp_steps:
            given = "" if target.total_steps is not None else " (the default without total_steps)"
            return (f"training stopped at step {steps} of the sparsity target's {target.ramp_steps}-step "
                    f"ramp{given}, so the ticket's sparsity {target.sparsity:g} was never trained; pass "
                    f"total_steps=<optimiser steps of the run> to apply")
        score = self.gate_score(module)
        if score.numel() > 1 and bool((score == score.reshape(-1)[0]).all()):
            return ("the gates never moved from their initial value, so the selection among them is "
                    "arbitrary: check that the optimizer holds torch_slt.mask_parameters(model)")
        return None

    def is_gated(self, module: nn.Module) -> bool:
        return f"{self._tensor_name}_{self.fields[0]}" in module._parameters

    # ------------------------------------------------------------------ masks
    def gate_score(self, module: nn.Module) -> Tensor:
        """The detached tensor whose order decides which gates a sparsity target keeps."""
        return self.field(module, self.fields[0]).detach()

    def threshold_mask(self, module: nn.Module) -> Tensor:
        """``P(z != 0) > threshold``: the paper's hard mask (``mu > 0`` for stg)."""
        raise NotImplementedError

    def hard_mask(self, module: nn.Module) -> Tensor:
        """The ticket's mask: the threshold rule, or with a sparsity target the exact top 1 - s gates of
        the whole ``apply`` call by :meth:`gate_score` (at the weight's shape)."""
        target = self.sparsity_target
        if target is None:
            return self.per_weight(self.threshold_mask(module))
        if f"{self._tensor_name}_mask" not in module._buffers:
            # inside apply, while the members join: a placeholder until the first forward or report
            return self.per_weight(self.threshold_mask(module))
        return self.per_weight(target.ticket_mask(module, self))

    def per_weight(self, per_gate: Tensor) -> Tensor:
        """A per-gate tensor at the weight's shape (the identity: one gate per weight; see ``Grouped``)."""
        return per_gate

    def weights_per_gate(self) -> int:
        return 1

    def forward_mask(self, module: nn.Module) -> Tensor:
        target = self.sparsity_target
        if target is None:
            return self.hard_mask(module)
        if not module.training:
            return self.per_weight(target.ticket_mask(module, self, in_forward=True))
        # The training selection of the current window, made in the optimizer hook for all members
        # (here only before the first optimizer step, or after a load that held none).
        if target.window is None:
            target.refresh_training_selection()
        return self.per_weight(module._buffers[f"{self._tensor_name}_window"])

    def relaxed_weight(self, module: nn.Module, orig: Tensor, mask: Tensor) -> Tensor:
        if self.sparsity_target is None:
            return self.gated_weight(module, orig, None, None)
        # With a target the forward keeps the selected gates only (``mask``); every gate still gets its
        # gradient (straight-through), so gates can swap in and out of the selection. When the penalty
        # has pushed the selection's cut below the paper's threshold, the gates are sampled from scores
        # shifted up by the difference, so that a selected gate is on with probability > 0.5 (as
        # mu > 0 is for the paper's rule): the training forward then matches the ticket. The cut stays
        # on the device (no read back).
        cut = module._buffers[f"{self._tensor_name}_step"][2]
        shift = torch.clamp(cut - self.score_threshold, max=0.0).to(orig.dtype if orig.is_floating_point()
                                                                     else torch.float32)
        return self.gated_weight(module, orig, mask, shift)

    #: The score at which ``P(z != 0) = threshold`` (``mu = 0`` for stg); set by the subclass.
    score_threshold: float = 0.0

    def gated_weight(self, module: nn.Module, orig: Tensor, keep: Tensor | None,
                     shift: Tensor | None) -> Tensor:
        """The train-mode weight ``orig * z`` with gates sampled from ``score - shift`` (a device
        scalar, or None for no shift), times ``keep`` in the forward only, when given."""
        raise NotImplementedError

    def _undo(self, module: nn.Module, orig: nn.Parameter, drop_pre_hook: bool = True) -> None:
        super()._undo(module, orig, drop_pre_hook)
        module._buffers.pop(f"{self._tensor_name}_step", None)
        module._buffers.pop(f"{self._tensor_name}_window", None)


class _SaveSchedule:
    """``state_dict`` pre-hook: write the host step count into the ``<tensor>_step`` record."""

    def __init__(self, owner: GateMethod) -> None:
        self.owner = owner          # the gating method; its _undo removes this hook

    def __call__(self, module: nn.Module, prefix: str, keep_vars: bool) -> None:
        target = self.owner.sparsity_target
        state = module._buffers[f"{self.owner._tensor_name}_step"]
        with torch.no_grad():
            state[0].fill_(target.step)
            state[1].fill_(-1 if target.window is None else target.window)


class _LoadSchedule:
    """``load_state_dict`` pre-hook: restore the host step count (and window) from the record."""

    def __init__(self, owner: GateMethod) -> None:
        self.owner = owner

    def __call__(self, module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
        name = self.owner._tensor_name
        record = state_dict.get(f"{prefix}{name}_step")
        if record is None or tuple(record.shape) != (3,):
            return  # torch reports the missing or mismatched key itself
        step, window = (int(v) for v in record[:2].tolist())   # at load time, not in training
        target = self.owner.sparsity_target
        target.step = step
        target.window = window if window >= 0 else None
        target.ticket_fresh = False
        window_key, mask_key = f"{prefix}{name}_window", f"{prefix}{name}_mask"
        if window_key not in state_dict and mask_key in state_dict:
            # A checkpoint of torch_slt <= 0.2 kept the training selection in the mask buffer.
            gate = module._buffers[f"{name}_window"]
            saved = state_dict[mask_key]
            if window >= 0 and self.owner.weights_per_gate() == 1 and saved.numel() == gate.numel():
                state_dict[window_key] = saved.reshape(gate.shape)
            else:
                state_dict[window_key] = gate.clone()
                target.window = None
