r"""What the gate methods (``stg``, ``hardconcrete``) share: ``lam``, ``threshold`` and sparsity targets.

A gate method has a penalty: :func:`torch_slt.penalty` returns :math:`\lambda` times the expected
fraction of gated weights kept, :math:`\lambda \sum_i P(z_i \ne 0) / N`. Either ``lam`` is fixed, or
``sparsity`` is given and :math:`\lambda` is adapted during training so that the **hard** mask ends at
that sparsity.

How the target works
--------------------
Reaching a sparsity :math:`s` is the constrained problem "minimise the task loss subject to
kept fraction :math:`= 1 - s`", and :math:`\lambda` is its multiplier. Each call of
:func:`torch_slt.penalty` in training mode (gated modules in ``train()``, autograd enabled) first takes
one step on :math:`\lambda`, then returns :math:`\lambda\,E[\text{kept}]` with the new value:

.. math::

    g_t = \text{hard kept}_t - (1 - s),\qquad e_t = E[\text{kept}]_t - (1 - s),

    d_t = \mathrm{clip}\Bigl(\frac{g_t + \kappa\,(e_t - e_{t-1})}{\delta},\ -1,\ 1\Bigr),\qquad
    \lambda_{t+1} = \lambda_t + \eta\,(|\lambda_t| + \lambda_0)\,d_t

with :math:`\eta` = ``lam_lr`` (0.3), :math:`\kappa = 50` steps, :math:`\delta = 0.02` and
:math:`\lambda_0 = 0.1`. Why each part:

* the gap :math:`g` is measured on the **hard** mask (the one ``finalize`` keeps), so the ticket lands
  on the target even when gates end between 0 and 1;
* the step is relative to :math:`|\lambda|`: the useful :math:`\lambda` spans orders of magnitude
  (the penalty is a mean over all gates, so the :math:`\lambda` that balances the task loss grows
  with the number of gates), and a relative step reaches any scale in a few dozen steps;
  :math:`\lambda_0` lets it start from 0 and change sign;
* :math:`\lambda` may become negative, which pushes gates back open: needed when the target keeps
  more weights than the task loss alone would (with Adam, half the gates of a random network
  close without any penalty) and to recover from an overshoot;
* the derivative term uses the expected kept fraction, which moves smoothly from the first step
  (the hard mask only moves once gates cross the threshold): :math:`\lambda` stops growing while
  the gates already approach the target with a time constant of about :math:`\kappa` steps, which
  prevents the wind-up that the gates' lag would otherwise cause;
* the step is full size (:math:`\pm\eta`, relative) once the hard mask is more than :math:`\delta`
  (2 points) off and the gates are not closing the gap fast enough, and proportional inside that
  band, so :math:`\lambda` settles instead of chattering.

One :math:`\lambda` is shared by every tensor gated by the same ``apply`` call: layers find their own
densities (as with a fixed ``lam``) and only the overall kept fraction is controlled. The state
(:math:`\lambda`, :math:`e_{t-1}`, a started flag) lives in the buffer ``<tensor>_lam`` of each gated
module, so ``state_dict`` save/load resumes exactly, and disappears at :func:`torch_slt.finalize`.
Call :func:`torch_slt.penalty` once per optimisation step (with gradient accumulation, each call
is a step of :math:`\lambda`).

Measured convergence (digits, frozen random 64-300-100-10 MLP, Adam lr 0.05 on the gates, batch
256): see ``docs/methods/stg.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from torch_slt.core.validation import (check_nonnegative, check_positive, check_probability, check_sparsity,
                                       sparsity_or_amount)
from torch_slt.core.base import LearnedMaskMethod

#: Default initial multiplier when ``sparsity`` is given without ``lam``.
DEFAULT_TARGET_LAM = 0.0
#: Derivative gain of the controller, in steps (kappa in the module docstring).
DAMPING_STEPS = 50.0
#: Scale below which lambda steps are absolute rather than relative (lambda_0 in the docstring).
LAM_FLOOR = 0.1
#: Gap (kept fraction) at which the step reaches its full size (delta in the docstring).
BAND = 0.02
#: Default step size of the controller (eta in the docstring).
DEFAULT_LAM_LR = 0.3


class SparsityTarget:
    r"""Adapts :math:`\lambda` for every tensor gated by one ``apply`` call (see the module docstring).

    It holds only configuration; the state lives in the ``<tensor>_lam`` buffers of the gated modules.
    """

    def __init__(self, sparsity: float, lr: float) -> None:
        self.sparsity = sparsity
        self.lr = lr

    def __repr__(self) -> str:
        return f"SparsityTarget(sparsity={self.sparsity}, lr={self.lr})"

    def step(self, members: list[tuple[nn.Module, GateMethod]]) -> None:
        """One step of lambda from the current gates of ``members`` (called by ``penalty``)."""
        if not members or not torch.is_grad_enabled() or not any(m.training for m, _ in members):
            return
        with torch.no_grad():
            states = [h._lam_state(m) for m, h in members]
            state = states[0]
            # The mask buffers were refreshed by this step's forward; count_nonzero avoids the int64
            # copy that bool.sum() makes.
            masks = [m._buffers.get(f"{h._tensor_name}_mask") for m, h in members]
            masks = [mask if mask is not None else h.hard_mask(m) for mask, (m, h) in zip(masks, members)]
            total = sum(mask.numel() for mask in masks)
            hard = torch.stack([torch.count_nonzero(mask).to(state.device) for mask in masks]).sum()
            hard = hard.to(state.dtype) / total
            probs = [h.prob_nonzero(m).detach().sum().to(state.device) for m, h in members]
            expected = torch.stack(probs).sum().to(state.dtype) / total
            gap = hard - (1.0 - self.sparsity)
            egap = expected - (1.0 - self.sparsity)
            first = state[2] == 0  # no previous gap yet: no derivative term
            previous = torch.where(first, egap, state[1])
            drive = ((gap + DAMPING_STEPS * (egap - previous)) / BAND).clamp_(-1, 1)
            lam = state[0] + self.lr * (state[0].abs() + LAM_FLOOR) * drive
            new = torch.stack([lam, egap, torch.ones_like(lam)])
            for s in states:
                s.copy_(new.to(s.device))


class GateMethod(LearnedMaskMethod):
    """Base of the gate methods: a penalty weight ``lam`` (fixed or adapted to ``sparsity``) and a
    ``threshold`` on :math:`P(z \\ne 0)` for the hard mask. Subclasses provide the gates."""

    def __init__(self, lam: float | None = None, threshold: float = 0.5, sparsity: float | None = None,
                 lam_lr: float = DEFAULT_LAM_LR, *, amount: float | None = None,
                 _target: SparsityTarget | None = None) -> None:
        who = type(self).name or type(self).__name__
        value, given = sparsity_or_amount(sparsity, amount, who)
        self.sparsity = check_sparsity(value, who, required=False, name=given)
        self.lam_lr = check_positive("lam_lr", lam_lr, who)
        if lam is None:
            lam = 0.1 if self.sparsity is None else DEFAULT_TARGET_LAM
        self.lam = check_nonnegative("lam", lam, who)
        self.threshold = check_probability("threshold", threshold, who)
        if _target is None and self.sparsity is not None:
            _target = SparsityTarget(self.sparsity, self.lam_lr)
        self.sparsity_target = _target

    def plan(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[dict[str, Any]]:
        # One target object for the whole apply() call: one lambda for all the tensors it gates.
        if self.sparsity_target is None:
            return [{} for _ in targets]
        return [{"_target": self.sparsity_target} for _ in targets]

    # ------------------------------------------------------------------ lambda state
    def init_target_state(self, module: nn.Module, orig: Tensor) -> None:
        """Register ``<tensor>_lam`` = [lambda, last gap, steps taken > 0] when a target is set."""
        if self.sparsity_target is not None:
            state = torch.tensor([self.lam, 0.0, 0.0], dtype=torch.float32, device=orig.device)
            module.register_buffer(f"{self._tensor_name}_lam", state)

    def _lam_state(self, module: nn.Module) -> Tensor:
        return module._buffers[f"{self._tensor_name}_lam"]

    def penalty_lam(self, module: nn.Module) -> float | Tensor:
        """The multiplier of this tensor's term in :func:`torch_slt.penalty` (a copy, safe to keep)."""
        if self.sparsity_target is None:
            return self.lam
        return self._lam_state(module)[0].clone()

    def _undo(self, module: nn.Module, orig: nn.Parameter, drop_pre_hook: bool = True) -> None:
        super()._undo(module, orig, drop_pre_hook)
        module._buffers.pop(f"{self._tensor_name}_lam", None)

