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
  ``ramp`` :math:`r` = 0.5 by default. :math:`t` counts the :func:`torch_slt.penalty` calls made in
  training mode (one per optimiser step); without ``total_steps`` the ramp lasts
  :data:`DEFAULT_RAMP_STEPS` calls, and ``report``/``finalize`` warn if training stopped before it ended.
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

The state lives in the buffer ``<tensor>_step`` of each gated module (steps taken; the first step and
the cut of the training selection held in the mask buffer), so a ``state_dict`` saved mid-schedule
resumes exactly; it disappears at :func:`torch_slt.finalize`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from torch_slt.core.validation import (check_fraction, check_nonnegative, check_optional_positive_int,
                                       check_probability, check_sparsity, sparsity_or_amount)
from torch_slt.core.base import LearnedMaskMethod
from torch_slt.core.granularity import top_groups
from torch_slt.core.selection import keep_count, top_k_mask

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


#: Length of the sparsity schedule when ``total_steps`` is not given, in ``penalty()`` calls.
DEFAULT_RAMP_STEPS = 1000
#: Fraction of ``total_steps`` over which the training sparsity ramps from 0 to the target.
DEFAULT_RAMP = 0.5
#: A training forward's selection is refreshed every this many steps (see :meth:`SparsityTarget.mask`).
REFRESH_STEPS = 8


class SparsityTarget:
    """The sparsity target shared by every tensor gated by one ``apply`` call (module docstring).

    It holds the configuration, its members and a cache of the current selection; the step count
    lives in the ``<tensor>_step`` buffers of the gated modules, so ``state_dict`` resumes exactly.
    """

    def __init__(self, sparsity: float, total_steps: int | None = None, ramp: float = DEFAULT_RAMP) -> None:
        self.sparsity = sparsity
        self.total_steps = total_steps
        self.ramp = ramp
        self.members: list[tuple[nn.Module, GateMethod]] = []
        # (key of the cached selection, {id(module): mask}, cut)
        self._selection: tuple[dict[int, tuple], dict[int, Tensor], float] | None = None

    def __repr__(self) -> str:
        return f"SparsityTarget(sparsity={self.sparsity}, total_steps={self.total_steps}, ramp={self.ramp})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_selection"] = None  # a cache
        return state

    @property
    def ramp_steps(self) -> int:
        """Steps over which the training sparsity ramps up to the target."""
        if self.total_steps is None:
            return DEFAULT_RAMP_STEPS
        return max(1, round(self.ramp * self.total_steps))

    def sparsity_at(self, step: int) -> float:
        """The training sparsity after ``step`` steps: cubic from 0 to :attr:`sparsity`."""
        progress = min(max(step / self.ramp_steps, 0.0), 1.0)
        return self.sparsity * (1.0 - (1.0 - progress) ** 3)

    def step(self, members: list[tuple[nn.Module, GateMethod]]) -> None:
        """Advance the schedule by one step (called by ``penalty`` in training mode)."""
        if not members or not torch.is_grad_enabled() or not any(m.training for m, _ in members):
            return
        for module, hook in members:
            hook._step_state(module)[0] += 1

    def mask(self, module: nn.Module, hook: GateMethod, sparsity: float, *, window: int | None = None) -> Tensor:
        """``module``'s part of the exact top-(1 - sparsity) selection over all members' gate scores."""
        return self.select(module, hook, sparsity, window=window)[0]

    def select(self, module: nn.Module, hook: GateMethod, sparsity: float, *,
               window: int | None = None) -> tuple[Tensor, float]:
        """``module``'s part of the exact top-(1 - sparsity) selection over all members' gate scores,
        and the lowest score kept (the cut).

        The ticket's selection is recomputed whenever a member's gates changed (keyed on the score
        tensors' versions); members removed since (``finalize`` removes the gates one by one) keep
        their share of it. A training selection (``window``: the first step of its window) is made
        once per window of :data:`REFRESH_STEPS` steps for all members: the gates move little in
        between, and a selection costs about a third of a lenet300 training step on a CPU.
        """
        members = [(m, h) for m, h in self.members if h.is_gated(m)]
        if not any(m is module for m, _ in members):
            members.append((module, hook))
        scores = [h.gate_score(m) for m, h in members]
        if window is not None:
            key = {id(m): ("train", window, sparsity) for m, _ in members}
        else:
            # (the Parameter's identity: gate_score hands out a fresh detached view at every call)
            key = {id(m): (id(p), p._version, sparsity)
                   for m, h in members for p in [h.field(m, h.fields[0])]}
        cached = self._selection
        if cached is None or any(cached[0].get(k) != v for k, v in key.items()):
            cached = self._selection = (key, *_select(members, scores, sparsity))
        return cached[1][id(module)], cached[2]


def _select(members: list[tuple[nn.Module, Any]], scores: list[Tensor],
            sparsity: float) -> tuple[dict[int, Tensor], float]:
    """``{id(module): mask at the gate shape}`` keeping the top ``1 - sparsity`` of all ``scores``
    together (exactly, one gate per weight; counted in weights with one gate per group of weights,
    ``granularity=``, where it keeps the fewest whole groups that reach ``1 - sparsity``), and the
    lowest score kept."""
    flat = torch.cat([s.reshape(-1).to(scores[0].device) for s in scores])
    sizes = [h.weights_per_gate() for _, h in members]
    if all(size == 1 for size in sizes):
        keep = top_k_mask(flat, keep_count(flat.numel(), sparsity))
    else:
        per_gate = torch.cat([torch.full((s.numel(),), size, dtype=torch.float64)
                              for s, size in zip(scores, sizes)])
        keep = top_groups(flat, per_gate, sparsity).to(flat.device)
    start, masks = 0, {}
    for (m, _), s in zip(members, scores):
        masks[id(m)] = keep[start:start + s.numel()].view(s.shape).to(s.device)
        start += s.numel()
    cut = float(flat[keep].min()) if bool(keep.any()) else float(flat.max())
    return masks, cut


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
    def init_target_state(self, module: nn.Module, orig: Tensor) -> None:
        """Register the ``<tensor>_step`` counter and join the target's members, when a target is set."""
        if self.sparsity_target is not None:
            # [steps taken, first step of the training selection held in the mask buffer (-1: none),
            #  that selection's cut]; float64 counts steps exactly up to 2**53
            state = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64, device=orig.device)
            module.register_buffer(f"{self._tensor_name}_step", state)
            self.sparsity_target.members.append((module, self))

    def _step_state(self, module: nn.Module) -> Tensor:
        return module._buffers[f"{self._tensor_name}_step"]

    def steps_taken(self, module: nn.Module) -> int:
        """Training steps counted by the sparsity target so far (0 without a target)."""
        if self.sparsity_target is None:
            return 0
        return int(self._step_state(module)[0])

    def target_problem(self, module: nn.Module) -> str | None:
        """Why this sparsity target's ticket is not what training made, if it is not (for a warning)."""
        target = self.sparsity_target
        steps = self.steps_taken(module)
        if steps == 0:
            return ("the sparsity target's schedule never advanced: torch_slt.penalty(model) was not called "
                    "in training mode, so the gates were never trained towards the target; add it to the "
                    "loss once per optimiser step")
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
        if self.sparsity_target is None:
            return self.per_weight(self.threshold_mask(module))
        return self.per_weight(self.sparsity_target.mask(module, self, self.sparsity_target.sparsity))

    def per_weight(self, per_gate: Tensor) -> Tensor:
        """A per-gate tensor at the weight's shape (the identity: one gate per weight; see ``Grouped``)."""
        return per_gate

    def weights_per_gate(self) -> int:
        return 1

    def forward_mask(self, module: nn.Module) -> Tensor:
        target = self.sparsity_target
        if target is None:
            return self.hard_mask(module)
        state = self._step_state(module)
        if not module.training:
            state[1] = -1  # the buffer now holds the ticket's selection, not a training one
            return self.hard_mask(module)
        # A training selection is made at the first step of each window of REFRESH_STEPS steps (at
        # the schedule's sparsity of that step) and kept in the mask buffer for the window, so a run
        # resumed from a state_dict mid-window uses the very same selection.
        window = int(state[0]) // REFRESH_STEPS * REFRESH_STEPS
        buffer = module._buffers.get(f"{self._tensor_name}_mask")
        if int(state[1]) == window and buffer is not None:
            return buffer
        mask, cut = target.select(module, self, target.sparsity_at(window), window=window)
        state[1], state[2] = window, cut
        return self.per_weight(mask)

    def relaxed_weight(self, module: nn.Module, orig: Tensor, mask: Tensor) -> Tensor:
        if self.sparsity_target is None:
            return self.gated_weight(module, orig, None, 0.0)
        # With a target the forward keeps the selected gates only (``mask``); every gate still gets its
        # gradient (straight-through), so gates can swap in and out of the selection. When the penalty
        # has pushed the selection's cut below the paper's threshold, the gates are sampled from scores
        # shifted up by the difference, so that a selected gate is on with probability > 0.5 (as
        # mu > 0 is for the paper's rule): the training forward then matches the ticket.
        shift = min(0.0, float(self._step_state(module)[2]) - self.score_threshold)
        return self.gated_weight(module, orig, mask, shift)

    #: The score at which ``P(z != 0) = threshold`` (``mu = 0`` for stg); set by the subclass.
    score_threshold: float = 0.0

    def gated_weight(self, module: nn.Module, orig: Tensor, keep: Tensor | None, shift: float) -> Tensor:
        """The train-mode weight ``orig * z`` with gates sampled from ``score - shift`` (times ``keep``
        in the forward only, when given)."""
        raise NotImplementedError

    def _undo(self, module: nn.Module, orig: nn.Parameter, drop_pre_hook: bool = True) -> None:
        super()._undo(module, orig, drop_pre_hook)
        module._buffers.pop(f"{self._tensor_name}_step", None)
