r"""Hard-concrete L0 gates (``hardconcrete``): stretched, clamped concrete gates, one per weight.

Louizos, Welling, Kingma, "Learning Sparse Neural Networks through L0 Regularization", ICLR 2018
(https://arxiv.org/abs/1712.01312); reference code ``AMLab-Amsterdam/L0_regularization``
(``l0_layers.py``).

Each weight :math:`w` gets a learnable :math:`\log\alpha` (``weight_log_alpha``). In train mode a fresh
gate is drawn at every forward,

.. math::

    u \sim U(\epsilon, 1 - \epsilon),\quad
    s = \sigma\!\left(\frac{\log u - \log(1 - u) + \log\alpha}{\beta}\right),\quad
    z = \min(1, \max(0, s(\zeta - \gamma) + \gamma)),

with :math:`\beta = 2/3`, :math:`\gamma = -0.1`, :math:`\zeta = 1.1`, :math:`\epsilon = 10^{-6}`; the
stretch to :math:`(\gamma, \zeta)` and the clamp give :math:`z` exact zeros and ones. The effective
weight is :math:`w z`. The penalty uses the closed form
:math:`P(z \ne 0) = \sigma(\log\alpha - \beta \log(-\gamma / \zeta))`, with the same ``lam`` semantics
as ``stg`` (``lam`` times the expected fraction kept). The hard mask keeps a weight when
:math:`P(z \ne 0)` exceeds ``threshold`` (0.5); eval mode and :func:`torch_slt.finalize` use it (the
reference's deterministic test gate would rescale frozen weights by values between 0 and 1, which is
not a ticket). Initialisation follows the reference: :math:`\log\alpha \sim N(\log(1 - p) - \log p,
0.01^2)` with :math:`p` = ``droprate_init`` (0.5, so :math:`\log\alpha \approx 0` and
:math:`P(z \ne 0) \approx 0.83`).

Differences from the reference: one gate per weight (the reference gates input units or feature maps),
no clamp of :math:`\log\alpha` to :math:`[\log 0.01, \log 100]` after each step (torch_slt does not
touch the optimizer), and the penalty is ``lam`` times the *mean* over gates instead of a per-example
sum.

Example:
    >>> import torch, torch_slt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> model = torch_slt.apply(model, "hardconcrete", lam=0.1)
    >>> opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=1e-2)
    >>> x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    >>> loss = torch.nn.functional.cross_entropy(model(x), y) + torch_slt.penalty(model)
    >>> loss.backward(); opt.step()
    >>> model = torch_slt.finalize(model)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from torch_slt.core.validation import check_probability
from torch_slt.core.granularity import GroupLayout
from torch_slt.methods._gates import GateMethod
from torch_slt.methods._target import DEFAULT_RAMP, SparsityTarget
from torch_slt.methods._groups import Grouped
from torch_slt.core.registry import register_method

BETA = 2.0 / 3.0
GAMMA = -0.1
ZETA = 1.1
EPS = 1e-6
#: Standard deviation of the reference initialisation of log alpha.
INIT_STD = 1e-2
#: ``mask_rule="reference"``: the reference's test gate is non-zero from ``log_alpha > log(-gamma / zeta)``
#: (``sigmoid(log_alpha) > -gamma / (zeta - gamma) = 1/12``), i.e. ``-log 11``.
REFERENCE_CUT = math.log(-GAMMA / ZETA)
MASK_RULES = ("probability", "reference")


def _check_mask_rule(rule: str, threshold: float, sparsity: float | None) -> str:
    if rule not in MASK_RULES:
        raise ValueError(f"hardconcrete: mask_rule={rule!r} is not one of {', '.join(map(repr, MASK_RULES))}")
    if rule == "reference" and (threshold != 0.5 or sparsity is not None):
        raise ValueError(f"hardconcrete: mask_rule='reference' is the reference's own keep rule; it takes "
                         f"neither a threshold (got {threshold!r}) nor a sparsity target (got {sparsity!r}): "
                         f"drop those, or keep mask_rule='probability'")
    return rule


class _HardConcreteGate(torch.autograd.Function):
    r"""``weight * z`` with ``z`` a stretched, clamped hard-concrete sample; saves only ``z``.

    Autograd would keep the noise, the sigmoid output, the stretched sample and the clamp mask. The
    gradient needs :math:`\partial z / \partial \log\alpha = (\zeta - \gamma) s (1 - s) / \beta` where
    :math:`0 < z < 1` and 0 elsewhere, and :math:`s` is recovered from :math:`z` there, so the gate
    tensor is the only thing saved (the weight and log alpha are leaves, saved for free).
    """

    @staticmethod
    def forward(ctx, weight: Tensor, log_alpha: Tensor, keep: Tensor | None, shift: Tensor | None) -> Tensor:
        z = torch.rand_like(log_alpha).mul_(1 - 2 * EPS).add_(EPS)     # u ~ U(eps, 1 - eps)
        z.logit_().add_(log_alpha)
        if shift is not None:  # a sparsity target's shift, a device scalar (GateMethod.relaxed_weight)
            z.sub_(shift)
        z.div_(BETA).sigmoid_()                                       # s
        z.mul_(ZETA - GAMMA).add_(GAMMA).clamp_(0, 1)                 # stretch, then clamp
        ctx.save_for_backward(weight, z, keep)
        ctx.gate_shape = log_alpha.shape
        out = weight * z.to(weight.dtype)
        if keep is not None:  # a sparsity target's selection: forward only (straight-through to log alpha)
            out.mul_(keep)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        weight, z, keep = ctx.saved_tensors
        grad_weight = grad_log_alpha = None
        if ctx.needs_input_grad[0]:
            grad_weight = grad_out * z.to(grad_out.dtype)
            if keep is not None:
                grad_weight.mul_(keep)
        if ctx.needs_input_grad[1]:
            # (zeta - gamma) s (1 - s) / beta with s = (z - gamma) / (zeta - gamma), zero where clamped.
            slope = (z - GAMMA).mul_(ZETA - z).div_((ZETA - GAMMA) * BETA).mul_((z > 0) & (z < 1))
            grad_log_alpha = (grad_out * weight).to(z.dtype).mul_(slope)
            if grad_log_alpha.shape != ctx.gate_shape:   # one gate per group: sum over it
                grad_log_alpha = grad_log_alpha.sum_to_size(ctx.gate_shape)
        return grad_weight, grad_log_alpha, None, None


@register_method("hardconcrete")
class HardConcrete(Grouped, GateMethod):
    """Hard-concrete L0 gates on every weight; see the module docstring.

    Args:
        lam: penalty weight; :func:`torch_slt.penalty` returns ``lam`` times the expected fraction of
            gated weights kept. Default 0.1, as ``stg``; with ``sparsity``, ``min(0.1 * odds**2, odds)``
            with ``odds = s / (1 - s)``.
        droprate_init: initial drop rate ``p``; log alpha starts at ``log(1 - p) - log(p)`` plus
            N(0, 0.01^2) noise, as in the reference (0.5).
        threshold: keep a weight when ``P(z != 0)`` exceeds this (0.5).
        sparsity: target fraction of weights removed, in [0, 1): the hard mask keeps exactly the top
            ``1 - sparsity`` gates by ``log_alpha`` over the whole ``apply`` call, reached along a
            cubic schedule in training (see :mod:`torch_slt.methods._gates`). Default None.
        amount: torch's name for ``sparsity`` (give one of the two).
        granularity: ``"weight"`` (default), ``"neuron"``/``"channel"`` or ``"head"``; see
            :mod:`torch_slt.core.granularity`.
        total_steps: optimiser steps of the training run, for the schedule (default: a 1000-step ramp).
        ramp: fraction of ``total_steps`` over which the training sparsity ramps up (0.5).
        mask_rule: ``"probability"`` (default): keep a weight when ``P(z != 0) > threshold``, i.e.
            ``log_alpha > -1.599`` at 0.5. ``"reference"``: keep it where the reference's deterministic
            test gate ``min(1, max(0, sigmoid(log_alpha) (zeta - gamma) + gamma))`` is non-zero, i.e.
            ``log_alpha > log(-gamma / zeta) = -log 11 = -2.398`` (more weights kept). Without a
            sparsity target only (a target's mask is its top-k) and with the default ``threshold``.
    """

    description = "hard-concrete L0 gates (Louizos et al. 2018): stretched, clamped concrete samples"
    fields = ("log_alpha",)

    def __init__(self, lam: float | None = None, droprate_init: float = 0.5, threshold: float = 0.5,
                 sparsity: float | None = None, granularity: str = "weight", *, amount: float | None = None,
                 total_steps: int | None = None, ramp: float = DEFAULT_RAMP, mask_rule: str = "probability",
                 _target: SparsityTarget | None = None, _layout: GroupLayout | None = None) -> None:
        super().__init__(lam=lam, threshold=threshold, sparsity=sparsity, amount=amount,
                         total_steps=total_steps, ramp=ramp, _target=_target)
        self._init_granularity(granularity, _layout)
        self.droprate_init = check_probability("droprate_init", droprate_init, "hardconcrete")
        self.mask_rule = _check_mask_rule(mask_rule, self.threshold, self.sparsity)
        # P(z != 0) > threshold  <=>  log alpha > logit(threshold) + beta * log(-gamma / zeta).
        self._shift = BETA * math.log(-GAMMA / ZETA)
        self._log_alpha_cut = math.log(self.threshold / (1 - self.threshold)) + self._shift
        self.score_threshold = self._log_alpha_cut

    def init_state(self, module: nn.Module, orig: Tensor, mask, importance_scores) -> None:
        # float32 at least, as stg: small Adam steps on half-precision gates would round away.
        dtype = torch.promote_types(orig.dtype, torch.float32)
        mean = math.log(1 - self.droprate_init) - math.log(self.droprate_init)
        shape = self.gate_shape(orig)
        log_alpha = torch.empty(shape, dtype=dtype, device=orig.device).normal_(mean, INIT_STD)
        module.register_parameter(f"{self._tensor_name}_log_alpha", nn.Parameter(log_alpha))
        self.init_target_state(module, orig)

    def gated_weight(self, module: nn.Module, orig: Tensor, keep: Tensor | None,
                     shift: Tensor | None) -> Tensor:
        layout = self.layout(orig)
        keep = None if keep is None else layout.view(keep)
        weight = _HardConcreteGate.apply(layout.view(orig), self.field(module, "log_alpha"), keep, shift)
        return weight.reshape(orig.shape)

    def threshold_mask(self, module: nn.Module) -> Tensor:
        cut = REFERENCE_CUT if self.mask_rule == "reference" else self._log_alpha_cut
        return self.field(module, "log_alpha").detach() > cut

    def prob_nonzero(self, module: nn.Module) -> Tensor:
        log_alpha = self.field(module, "log_alpha")
        return self.per_weight(
            torch.sigmoid(log_alpha.to(torch.promote_types(log_alpha.dtype, torch.float32)) - self._shift))
