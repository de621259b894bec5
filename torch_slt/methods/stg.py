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

from torch_slt.core.validation import check_positive
from torch_slt.core.granularity import GroupLayout
from torch_slt.methods._gates import GateMethod
from torch_slt.methods._target import DEFAULT_RAMP, SparsityTarget
from torch_slt.methods._groups import Grouped
from torch_slt.core.registry import register_method


class _GaussianGate(torch.autograd.Function):
    """``weight * clamp(mu + sigma * noise, 0, 1)`` and this tensor's penalty term, in one autograd node.

    Outputs the gated weight and the sum of ``Phi(mu / sigma)`` (the expected number of gates
    kept, which :func:`torch_slt.penalty` uses through :meth:`StochasticGates.expected_kept`). One node
    for both means the penalty's gradient is added to ``mu``'s in the gate's own backward, when the
    backward reaches this layer: no separate gradient tensor allocated at the start of the backward
    (while every activation is still alive) and no extra accumulation pass.

    Autograd would keep the float gate and the clamp's own mask; the gradient to ``mu`` only needs to
    know where the gate was strictly inside (0, 1), so one byte per weight is saved instead.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, mu: Tensor, sigma: float, keep: Tensor | None,
                shift: Tensor | None) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        gate = torch.randn_like(mu)
        torch.add(mu, gate, alpha=sigma, out=gate)   # mu + sigma * noise in one pass, in place
        if shift is not None:   # a sparsity target's shift, a device scalar (GateMethod.relaxed_weight)
            gate.sub_(shift)
        inside = gate > 0
        inside &= gate < 1
        gate.clamp_(0, 1)
        if ctx.needs_input_grad[1]:
            kept = _phi(mu if shift is None else mu - shift, sigma).sum(dtype=torch.promote_types(mu.dtype,
                                                                                          torch.float32))
        else:
            kept = torch.zeros((), dtype=torch.promote_types(mu.dtype, torch.float32), device=mu.device)
        if keep is not None:
            # A sparsity target's selection: the forward (and the weight's gradient) keep the selected
            # gates only; the gradient to mu ignores it (``inside``: straight-through).
            gate = gate.mul_(keep) if gate.shape == keep.shape else gate * keep
        ctx.save_for_backward(weight, mu, inside, gate if ctx.needs_input_grad[0] else None, shift)
        ctx.sigma = sigma
        return weight * gate.to(weight.dtype), kept

    @staticmethod
    def backward(ctx, grad_out: Tensor | None, grad_kept: Tensor | None):
        weight, mu, inside, gate, shift = ctx.saved_tensors
        grad_weight = grad_mu = None
        if ctx.needs_input_grad[0] and grad_out is not None:
            grad_weight = grad_out * gate.to(grad_out.dtype)
        if ctx.needs_input_grad[1]:
            if grad_out is not None:
                # A uint8 view of the boolean: multiplying by a bool tensor would first copy it to floats.
                grad_mu = (grad_out * weight).mul_(inside.view(torch.uint8)).to(mu.dtype)
                if grad_mu.shape != mu.shape:   # one gate per group (granularity=): sum over the group
                    grad_mu = grad_mu.sum_to_size(mu.shape)
            if grad_kept is not None:
                density = _density(mu if shift is None else mu - shift, ctx.sigma)
                grad_mu = density.mul_(grad_kept) if grad_mu is None else grad_mu.addcmul_(density, grad_kept)
        return grad_weight, grad_mu, None, None, None


def _graph_alive(t: Tensor) -> bool:
    """Whether back-propagating through ``t`` is still possible (its node's saved tensors not freed)."""
    node = t.grad_fn
    if node is None:
        return False
    try:
        node.saved_tensors
    except RuntimeError:  # freed by a backward that already ran through it
        return False
    except AttributeError:  # a node that keeps no saved tensors
        return True
    return True


def _phi(mu: Tensor, sigma: float) -> Tensor:
    """``Phi(mu / sigma) = erfc(-mu / (sigma sqrt 2)) / 2`` (a new tensor, no autograd)."""
    return torch.mul(mu, -1.0 / (sigma * math.sqrt(2.0))).erfc_().mul_(0.5)


def _density(mu: Tensor, sigma: float) -> Tensor:
    """``d Phi(mu / sigma) / d mu = exp(-mu^2 / (2 sigma^2)) / (sigma sqrt(2 pi))`` in two passes."""
    log_c = torch.tensor(-math.log(sigma * math.sqrt(2.0 * math.pi)), dtype=mu.dtype, device=mu.device)
    return torch.addcmul(log_c, mu, mu, value=-0.5 / (sigma * sigma)).exp_()


class _GaussianCdf(torch.autograd.Function):
    """``Phi(mu / sigma) = erfc(-mu / (sigma sqrt 2)) / 2``, keeping only ``mu`` for backward.

    ``torch.special.ndtr`` is several times slower on CPUs, returns 0 in float32 from about
    ``mu / sigma < -5.5``, and its autograd keeps a float intermediate; the derivative
    ``exp(-mu^2 / (2 sigma^2)) / (sigma sqrt(2 pi))`` is recomputed from ``mu`` in backward.
    """

    @staticmethod
    def forward(ctx, mu: Tensor, sigma: float) -> Tensor:
        ctx.save_for_backward(mu)
        ctx.sigma = sigma
        return _phi(mu, sigma)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mu,) = ctx.saved_tensors
        return _density(mu, ctx.sigma).mul_(grad), None


@register_method("stg")
class StochasticGates(Grouped, GateMethod):
    """Gaussian stochastic gates on every weight; see the module docstring.

    Args:
        lam: penalty weight; :func:`torch_slt.penalty` returns ``lam`` times the expected fraction of
            gated weights kept. Default 0.1, the reference default; with ``sparsity``,
            ``min(0.1 * odds**2, odds)`` with ``odds = s / (1 - s)`` (8.1 at 0.9).
        sigma: standard deviation of the gate noise (0.5).
        mu_init: initial value of every ``mu`` (0.5).
        threshold: keep a weight when ``P(z != 0) = Phi(mu / sigma)`` exceeds this (0.5, i.e. mu > 0).
        sparsity: target fraction of weights removed, in [0, 1). When given, the hard mask keeps
            exactly the top ``1 - sparsity`` gates by ``mu`` over the whole ``apply`` call, reached
            along a cubic schedule in training (see :mod:`torch_slt.methods._gates`). Default None:
            the mask is ``mu > 0`` and the sparsity is what ``lam`` gives.
        amount: torch's name for ``sparsity`` (give one of the two).
        granularity: ``"weight"`` (default), ``"neuron"``/``"channel"`` (one gate per output unit) or
            ``"head"`` (per attention head); see :mod:`torch_slt.core.granularity`.
        total_steps: optimiser steps of the training run (e.g. ``len(loader) * epochs``), for the
            schedule of ``sparsity``; default: a ramp of 1000 steps.
        ramp: fraction of ``total_steps`` over which the training sparsity ramps up (0.5).
    """

    description = "Gaussian stochastic gates (Yamada et al. 2020): z = clamp(mu + N(0, sigma^2), 0, 1)"
    fields = ("mu",)

    def __init__(self, lam: float | None = None, sigma: float = 0.5, mu_init: float = 0.5,
                 threshold: float = 0.5, sparsity: float | None = None, granularity: str = "weight", *,
                 amount: float | None = None, total_steps: int | None = None, ramp: float = DEFAULT_RAMP,
                 _target: SparsityTarget | None = None, _layout: GroupLayout | None = None) -> None:
        super().__init__(lam=lam, threshold=threshold, sparsity=sparsity, amount=amount,
                         total_steps=total_steps, ramp=ramp, _target=_target)
        self._init_granularity(granularity, _layout)
        self.sigma = check_positive("sigma", sigma, "stg")
        self.mu_init = float(mu_init)
        if not math.isfinite(self.mu_init):
            raise ValueError(f"stg: mu_init={mu_init!r} must be a finite number")
        # P(z != 0) > threshold  <=>  mu > sigma * Phi^{-1}(threshold); computed once, not per step.
        self._mu_cut = self.sigma * float(torch.special.ndtri(torch.tensor(self.threshold, dtype=torch.float64)))
        self.score_threshold = self._mu_cut

    def init_state(self, module: nn.Module, orig: Tensor, mask, importance_scores) -> None:
        # Gates stay in float32 even for half-precision weights: Adam's small steps on mu would round away.
        dtype = torch.promote_types(orig.dtype, torch.float32)
        mu = torch.full(self.gate_shape(orig), self.mu_init, dtype=dtype, device=orig.device)
        module.register_parameter(f"{self._tensor_name}_mu", nn.Parameter(mu))
        self.init_target_state(module, orig)

    def gated_weight(self, module: nn.Module, orig: Tensor, keep: Tensor | None,
                     shift: Tensor | None) -> Tensor:
        mu = self.field(module, "mu")
        layout = self.layout(orig)
        keep = None if keep is None else layout.view(keep)
        weight, kept = _GaussianGate.apply(layout.view(orig), mu, self.sigma, keep, shift)
        weight = weight.reshape(orig.shape)
        if kept.requires_grad:
            # This forward's penalty term, for expected_kept (see _GaussianGate). The version counter
            # cannot be read under torch.compile without a graph break; there the graph's liveness
            # alone tells whether the term is still usable.
            version = None if torch.compiler.is_compiling() else mu._version
            self._pending_kept = (kept, mu, version)
        return weight

    def expected_kept(self, module: nn.Module) -> tuple[Tensor, int]:
        """The term the last train-mode forward computed with the gates, if still usable, else fresh.

        Usable: ``mu`` is the same tensor, unchanged since that forward, and that forward's backward
        has not run yet. The term stays available until the next forward replaces it, so a second
        ``penalty()`` call (for logging) returns the same value and changes nothing.
        """
        mu = self.field(module, "mu")
        pending = self.__dict__.get("_pending_kept")
        if pending is not None and torch.is_grad_enabled():
            kept, mu_then, version = pending
            if mu_then is mu and version in (None, mu._version) and _graph_alive(kept):
                size = self.weights_per_gate()   # the penalty counts weights, not gates
                return (kept, mu.numel()) if size == 1 else (kept * size, mu.numel() * size)
        return super().expected_kept(module)

    def __getstate__(self) -> dict:
        # The pending term holds an autograd graph: never copied, pickled or deep-copied.
        state = dict(self.__dict__)
        state.pop("_pending_kept", None)
        return state

    def threshold_mask(self, module: nn.Module) -> Tensor:
        return self.field(module, "mu").detach() > self._mu_cut

    def prob_nonzero(self, module: nn.Module) -> Tensor:
        mu = self.field(module, "mu")
        prob = _GaussianCdf.apply(mu.to(torch.promote_types(mu.dtype, torch.float32)), self.sigma)
        return self.per_weight(prob)
