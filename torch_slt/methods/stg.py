r"""Gaussian stochastic gates (``stg``): continuously relaxed Bernoulli gates, one per weight.

Yamada, Lindenbaum, Negahban, Kluger, "Feature Selection using Stochastic Gates", ICML 2020
(https://arxiv.org/abs/1810.04247); used on frozen random weights to find strong lottery tickets by
Tsayag & Lindenbaum, "Uncovering a Winning Lottery Ticket with Continuously Relaxed Bernoulli Gates"
(arXiv 2603.08914, 2026).

Each weight :math:`w` gets a learnable :math:`\mu` (``weight_mu``). In train mode the gate is
:math:`z = \mathrm{clamp}(\mu + \sigma\epsilon, 0, 1)` with :math:`\epsilon \sim N(0, 1)` drawn afresh at
every forward, and the effective weight is :math:`w z`. The penalty uses
:math:`P(z \ne 0) = \Phi(\mu / \sigma)`. The hard mask keeps a weight when that probability exceeds
``threshold`` (0.5 by default, which is the paper's rule :math:`\mu > 0`); eval mode and
:func:`torch_slt.finalize` use it.

The paper's parameterisation is used (the reference code stores :math:`\mu - 0.5`), so
``mu_init=0.5`` is the reference initialisation: gate mean 0.5, :math:`P(z \ne 0) = \Phi(1) \approx 0.84`.

Example:
    >>> import torch, torch_slt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> model = torch_slt.apply(model, "stg", lam=0.1)
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

from torch_slt._validation import check_nonnegative, check_positive, check_probability
from torch_slt.base import LearnedMaskMethod
from torch_slt.registry import register_method


class _GaussianGate(torch.autograd.Function):
    """``weight * clamp(mu + sigma * noise, 0, 1)`` that saves a boolean for backward.

    Autograd would keep the float gate and the clamp's own mask; the gradient to ``mu`` only needs to
    know where the gate was strictly inside (0, 1), so one byte per weight is saved instead.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, mu: Tensor, sigma: float) -> Tensor:
        gate = torch.randn_like(mu).mul_(sigma).add_(mu)   # noise drawn and shifted in place
        inside = (gate > 0) & (gate < 1)
        gate.clamp_(0, 1)
        ctx.save_for_backward(weight, inside, gate if ctx.needs_input_grad[0] else None)
        ctx.mu_dtype = mu.dtype
        return weight * gate.to(weight.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        weight, inside, gate = ctx.saved_tensors
        grad_weight = grad_mu = None
        if ctx.needs_input_grad[0]:
            grad_weight = grad_out * gate.to(grad_out.dtype)
        if ctx.needs_input_grad[1]:
            grad_mu = (grad_out * weight).mul_(inside).to(ctx.mu_dtype)
        return grad_weight, grad_mu, None


@register_method("stg")
class StochasticGates(LearnedMaskMethod):
    """Gaussian stochastic gates on every weight; see the module docstring.

    Args:
        lam: penalty weight; :func:`torch_slt.penalty` returns ``lam`` times the expected fraction of
            gated weights kept. Default 0.1, the reference default.
        sigma: standard deviation of the gate noise (0.5).
        mu_init: initial value of every ``mu`` (0.5).
        threshold: keep a weight when ``P(z != 0) = Phi(mu / sigma)`` exceeds this (0.5, i.e. mu > 0).
    """

    description = "Gaussian stochastic gates (Yamada et al. 2020): z = clamp(mu + N(0, sigma^2), 0, 1)"
    fields = ("mu",)

    def __init__(self, lam: float = 0.1, sigma: float = 0.5, mu_init: float = 0.5,
                 threshold: float = 0.5) -> None:
        self.lam = check_nonnegative("lam", lam, "stg")
        self.sigma = check_positive("sigma", sigma, "stg")
        self.mu_init = float(mu_init)
        if not math.isfinite(self.mu_init):
            raise ValueError(f"stg: mu_init={mu_init!r} must be a finite number")
        self.threshold = check_probability("threshold", threshold, "stg")
        # P(z != 0) > threshold  <=>  mu > sigma * Phi^{-1}(threshold); computed once, not per step.
        self._mu_cut = self.sigma * float(torch.special.ndtri(torch.tensor(self.threshold, dtype=torch.float64)))

    def init_state(self, module: nn.Module, orig: Tensor, mask, importance_scores) -> None:
        # Gates stay in float32 even for half-precision weights: Adam's small steps on mu would round away.
        dtype = torch.promote_types(orig.dtype, torch.float32)
        mu = torch.full(orig.shape, self.mu_init, dtype=dtype, device=orig.device)
        module.register_parameter(f"{self._tensor_name}_mu", nn.Parameter(mu))

    def relaxed_weight(self, module: nn.Module, orig: Tensor) -> Tensor:
        return _GaussianGate.apply(orig, self.field(module, "mu"), self.sigma)

    def hard_mask(self, module: nn.Module) -> Tensor:
        return self.field(module, "mu").detach() > self._mu_cut

    def prob_nonzero(self, module: nn.Module) -> Tensor:
        mu = self.field(module, "mu")
        return torch.special.ndtr(mu.to(torch.promote_types(mu.dtype, torch.float32)) / self.sigma)
