r"""Probabilistic supermasks (``supermask``): a Bernoulli mask per weight, sampled at every forward.

Zhou, Lan, Liu, Yosinski, "Deconstructing Lottery Tickets: Zeros, Signs, and the Supermask",
NeurIPS 2019, section 5 (https://arxiv.org/abs/1905.01067); reference code
``uber-research/deconstructing-lottery-tickets`` (``masked_networks.py``). The probabilistic masking
that ``stg`` is compared with: ``stg`` relaxes the Bernoulli gate, this samples it.

Each weight gets a logit :math:`s` (``weight_scores``, all equal to ``score_init`` at the start, 0 by
default so :math:`p = \sigma(s) = 1/2`). In train mode every forward samples
:math:`m \sim \mathrm{Bernoulli}(\sigma(s))` and uses :math:`W m`; the backward is straight-through to
:math:`\sigma(s)` (the reference's :math:`m + \sigma(s) - \mathrm{stopgrad}(\sigma(s))`), so
:math:`\partial L / \partial s = \partial L / \partial m \cdot \sigma'(s)`. There is no penalty: the kept
fraction emerges from training (lower ``score_init`` keeps fewer weights).

Eval mode, :func:`torch_slt.report` and :func:`torch_slt.finalize` use the deterministic hard mask
:math:`\sigma(s) >` ``threshold`` (1/2 by default, i.e. :math:`s > 0`). The paper instead evaluated with
sampled masks ("actually, sample them too"); ``eval_mode="sample"`` does that, so eval outputs are
then random, and :func:`~torch_slt.finalize` still keeps the deterministic hard mask.

``dynamic_scaling=True`` is the reference's ``--dynamic_scaling``: in train mode the sampled weight is
multiplied by ``numel / (number of ones in the sampled mask)``, which keeps each layer's *mean* weight.
It is off by default, as in the reference, and it does not rescue deep networks without normalisation:
a mask keeping a fraction :math:`p` of zero-mean weights shrinks a layer's output standard deviation by
:math:`\sqrt{p}`, so the factor :math:`1/p` overshoots by :math:`1/\sqrt{p}` per layer. On the zoo's conv6
(9 layers, digits, ``find``'s defaults) the plain supermask ends at chance (8.6 %) and
``dynamic_scaling=True`` at 30.4 %, its first epoch's loss at 3,033. torch_slt scales only the training
forward (and ``eval_mode="sample"``'s samples, as the reference does): a ticket stays a mask of the
frozen weights, so eval, :func:`~torch_slt.report` and :func:`~torch_slt.finalize` use
``weight * hard mask``. On a bias-free ReLU network (the zoo's ``lenet300`` and ``conv2/4/6``) a positive
factor per layer does not change the prediction; with biases and no normalisation it does.

Zhou et al. trained the logits with SGD with momentum 0.9 and a very large learning rate (100 for the
MNIST FC net); with Adam a learning rate around 0.1 is a reasonable start.

Example:
    >>> import torch, torch_slt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> model = torch_slt.apply(model, "supermask")
    >>> opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.1)
    >>> loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0]))
    >>> loss.backward(); opt.step()
    >>> model = torch_slt.finalize(model)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from torch_slt.core.validation import check_choice, check_probability, is_real
from torch_slt.core.base import LearnedMaskMethod
from torch_slt.core.registry import register_method


class _BernoulliMask(torch.autograd.Function):
    """``weight * m`` for a sampled ``m ~ Bernoulli(sigmoid(scores))``, straight-through to
    ``sigmoid(scores)``.

    Saves the sampled mask as booleans (only when the weight needs a gradient); ``sigmoid'(s)`` is
    recomputed from the scores, a leaf saved for free. The mask is drawn outside and the context set in
    ``setup_context``, so the function also runs inside ``torch.func`` transforms (``grad`` over
    ``functional_call``).
    """

    @staticmethod
    def forward(weight: Tensor, scores: Tensor, mask: Tensor) -> Tensor:
        return weight * mask

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        weight, scores, mask = inputs
        ctx.save_for_backward(weight, scores, mask if ctx.needs_input_grad[0] else None)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        weight, scores, mask = ctx.saved_tensors
        grad_weight = grad_scores = None
        if ctx.needs_input_grad[0]:
            grad_weight = grad_out * mask
        if ctx.needs_input_grad[1]:
            p = torch.sigmoid(scores)
            grad_scores = (grad_out * weight).to(scores.dtype).mul_(p).mul_(1 - p)
        return grad_weight, grad_scores, None


@register_method("supermask")
class Supermask(LearnedMaskMethod):
    """Bernoulli supermask logits on every weight; see the module docstring.

    Args:
        score_init: initial logit of every weight (0, so each is kept with probability 1/2).
        threshold: the hard mask keeps a weight when ``sigmoid(score) > threshold`` (0.5).
        eval_mode: ``"hard"`` (default) evaluates with the hard mask; ``"sample"`` samples a fresh
            Bernoulli mask at every eval forward, as Zhou et al. did.
        dynamic_scaling: scale the training forward by ``numel / ones in the sampled mask`` (the
            reference's ``--dynamic_scaling``; see the module docstring). Off by default, as in the
            reference.
    """

    description = "supermask (Zhou et al. 2019): m ~ Bernoulli(sigmoid(s)), straight-through to sigmoid(s)"
    fields = ("scores",)

    def __init__(self, score_init: float = 0.0, threshold: float = 0.5, eval_mode: str = "hard",
                 dynamic_scaling: bool = False) -> None:
        if not is_real(score_init) or not math.isfinite(score_init):
            raise ValueError(f"supermask: score_init={score_init!r} must be a finite number (a logit)")
        self.score_init = float(score_init)
        self.threshold = check_probability("threshold", threshold, "supermask")
        self.eval_mode = check_choice("eval_mode", eval_mode, ("hard", "sample"))
        if not isinstance(dynamic_scaling, bool):
            raise TypeError(f"supermask: dynamic_scaling={dynamic_scaling!r} must be True or False")
        self.dynamic_scaling = dynamic_scaling
        self._score_cut = math.log(self.threshold / (1 - self.threshold))  # sigmoid(s) > t <=> s > logit(t)

    def init_state(self, module: nn.Module, orig: Tensor, mask, importance_scores) -> None:
        dtype = torch.promote_types(orig.dtype, torch.float32)
        scores = torch.full(orig.shape, self.score_init, dtype=dtype, device=orig.device)
        module.register_parameter(f"{self._tensor_name}_scores", nn.Parameter(scores))

    def relaxed_weight(self, module: nn.Module, orig: Tensor, mask: Tensor) -> Tensor:
        scores = self.field(module, "scores")
        with torch.no_grad():
            sample = torch.rand_like(scores) < torch.sigmoid(scores)
        weight = _BernoulliMask.apply(orig, scores, sample)
        if not self.dynamic_scaling:
            return weight
        # A constant of this sample (no gradient, as the kept count is not differentiable); a tensor
        # op, no host read. clamp: a sample that keeps nothing is all zeros whatever the factor.
        kept = sample.sum(dtype=weight.dtype).clamp_min(1)
        return weight * (sample.numel() / kept)

    def hard_mask(self, module: nn.Module) -> Tensor:
        return self.field(module, "scores").detach() > self._score_cut

    def apply_mask(self, module: nn.Module) -> Tensor:
        weight = super().apply_mask(module)  # also refreshes the hard-mask buffer
        if module.training or self.eval_mode == "hard":
            return weight
        with torch.no_grad():  # eval_mode="sample": a fresh Bernoulli mask, as the paper evaluated
            scores = self.field(module, "scores")
            orig = getattr(module, self._tensor_name + "_orig")
            sample = torch.rand_like(scores) < torch.sigmoid(scores)
            weight = orig * sample
            if self.dynamic_scaling:  # the reference scales its sampled test masks too
                weight = weight * (sample.numel() / sample.sum(dtype=weight.dtype).clamp_min(1))
            return weight
