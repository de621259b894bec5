r"""GraSP (``grasp``): keep the weights whose removal least reduces the gradient flow.

Wang, Zhang, Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow", ICLR 2020
(https://arxiv.org/abs/2002.07376). Scores as the ``GraSP`` pruner of Tanaka et al.'s Synaptic-Flow
reference (``Pruners/pruners.py``), in eval mode by default, on the whole model:

1. :math:`g = \sum_b \nabla_w L_b` with the logits divided by the temperature :math:`T` (200), no graph;
2. :math:`Hg = \sum_b \nabla_w (g^\top \nabla_w L_b)`, a Hessian-gradient product by double backward;
3. score :math:`= w \odot Hg`; the mask **keeps the largest** scores.

This is the sign convention of the reference, equal to the original code (``alecwangcq/GraSP``), which
scores :math:`-w \odot Hg` and removes the largest. Scores are signed: a weight with a large negative
score is removed first. ``w`` and ``g`` cover the targeted weights only (biases and norms are neither
scored nor perturbed). The reference's division by :math:`|\sum \text{score}|` does not change the
ranking and is skipped; its re-initialisation of Linear layers is not done (the weights are yours).

Train or eval mode: Synaptic-Flow scores in eval mode (``model.eval()`` in ``prune.py`` unless
``--prune-train-mode``); the original (``pruner/GraSP.py``) scores a deep copy of the network in the
mode it is in, train mode in its scripts (the ``.eval()`` there is commented out), so BatchNorm
normalises with the scoring batch's own statistics and dropout is on. ``mode="train"`` does that; the
model's running statistics, ``num_batches_tracked`` and RNG states are restored afterwards either way.
With neither BatchNorm nor dropout the two modes give the same scores.

``data`` is read twice, so an iterator is first collected into a list.

Models whose operations have no second derivative in torch (``Hardswish`` / ``Hardsigmoid``, as in
MobileNetV3: "derivative for aten::hardsigmoid_backward is not implemented") cannot take the double
backward. With ``hvp="auto"`` (default) GraSP then computes :math:`Hg` by a central difference of
gradients, :math:`(\nabla L(w + \epsilon g) - \nabla L(w - \epsilon g)) / 2\epsilon` with
:math:`\epsilon = 10^{-5} \lVert w \rVert / \lVert g \rVert` (Pearlmutter 1994 notes the same
approximation), and warns that it did; ``hvp="finite-difference"`` always does, ``hvp="autograd"`` never
(the error is raised). This is torch_slt's, not the reference's: the reference only has the double backward.

Example:
    >>> import torch, torch_slt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> batch = (torch.randn(32, 8), torch.randint(0, 3, (32,)))
    >>> model = torch_slt.apply(model, "grasp", sparsity=0.9, data=batch)
    >>> torch_slt.report(model).kept
    18
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from torch_slt.core.validation import check_positive
from torch_slt.methods import _scoring
from torch_slt.core.registry import register_method
from torch_slt.core.targets import target_tensor


#: ``hvp=`` choices: how the Hessian-gradient product is computed.
HVP_MODES = ("auto", "autograd", "finite-difference")
#: The finite difference's step, relative: ``eps = FD_STEP * ||w|| / ||g||``.
FD_STEP = 1e-5


@register_method("grasp")
class Grasp(_scoring.DataScoredMethod):
    """Keep the ``1 - sparsity`` fraction of weights with the largest ``w * (H g)`` (GraSP).

    Args:
        sparsity: fraction of weights removed, in [0, 1). Required.
        scope: ``"global"`` (default) ranks all targeted tensors together; ``"layer"`` each alone.
        data: one ``(inputs, targets)`` batch or an iterable of batches (a DataLoader). Required.
        loss_fn: ``(logits, targets) -> scalar``; default cross entropy. Logits are taken from a tensor
            output, the first item of a tuple, or ``.logits`` of a Hugging Face ``ModelOutput``.
        temperature: the logits are divided by it before the loss (200, as the reference).
        mode: ``"eval"`` (default, Synaptic-Flow) or ``"train"`` (the original GraSP code: BatchNorm on
            batch statistics, dropout on) while scoring.
        hvp: how the Hessian-gradient product is computed: ``"autograd"`` (double backward, the
            reference's), ``"finite-difference"`` (a central difference of two gradients), or ``"auto"``
            (default: autograd, and the difference, with a warning, when the model has no second derivative).
        amount: torch's name for ``sparsity`` (give one of the two).

    ``torch_slt.apply`` leaves ``freeze=False`` for this method (the kept weights are meant to be trained
    afterwards); ``freeze=True`` makes it a strong-ticket baseline.
    """

    description = "GraSP: keep the largest w * (Hessian @ grad) on data, chosen once at apply"

    def __init__(self, sparsity: float | None = None, scope: str = "global", data: Any = None,
                 loss_fn: _scoring.LossFn | None = None, temperature: float = 200.0, *,
                 amount: float | None = None, rounding: str = "torch", mode: str = "eval",
                 hvp: str = "auto") -> None:
        super().__init__(sparsity, scope, data, loss_fn, amount=amount, rounding=rounding)
        self.temperature = check_positive("temperature", temperature, "grasp")
        if mode not in ("eval", "train"):
            raise ValueError(f"grasp: mode={mode!r} is not 'eval' (Synaptic-Flow) or 'train' (the original "
                             f"GraSP code)")
        self.mode = mode
        if hvp not in HVP_MODES:
            raise ValueError(f"grasp: hvp={hvp!r} is not one of {', '.join(map(repr, HVP_MODES))}")
        self.hvp = hvp

    def scores(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[Tensor]:
        who = type(self).name
        weights = [target_tensor(t) for t in targets]
        device = _scoring.model_device(model, targets)
        # Double backward: the fused scaled_dot_product_attention kernels (flash, memory-efficient)
        # have no second derivative, the math kernel does.
        with _scoring.preserved_state(model), torch.enable_grad(), _math_attention():
            _scoring.scoring_mode(model, weights)
            if self.mode == "train":
                model.train()
            batches = list(_scoring.iter_batches(self.data, who))
            stopped = self._gradient(model, batches, weights, device)
            if self.hvp == "finite-difference":
                hg = self._hg_by_difference(model, batches, weights, stopped, device)
            else:
                try:
                    hg = self._hg_by_autograd(model, batches, weights, stopped, device)
                except RuntimeError as err:
                    if self.hvp == "autograd" or "derivative for" not in str(err):
                        raise
                    warnings.warn(f"grasp: the model has no second derivative ({err}); the Hessian-gradient "
                                  f"product is a central difference of gradients instead (hvp='auto'; "
                                  f"hvp='finite-difference' chooses it without this warning)", UserWarning,
                                  stacklevel=2)
                    hg = self._hg_by_difference(model, batches, weights, stopped, device)
        return [w.detach() * h for w, h in zip(weights, hg)]

    def _gradient(self, model, batches, weights, device) -> list[Tensor]:
        """:math:`g = \\sum_b \\nabla_w L_b`, without a graph."""
        total = [torch.zeros_like(w) for w in weights]
        for batch in batches:
            for acc, g in zip(total, _scoring.grads(self._loss(model, batch, device), weights)):
                acc.add_(g)
        return total

    def _hg_by_autograd(self, model, batches, weights, stopped, device) -> list[Tensor]:
        """:math:`Hg = \\sum_b \\nabla_w (g^\\top \\nabla_w L_b)` by double backward (the reference's)."""
        hg = [torch.zeros_like(w) for w in weights]
        for batch in batches:
            g = _scoring.grads(self._loss(model, batch, device), weights, create_graph=True)
            flow = sum((gi * si).sum() for gi, si in zip(g, stopped))
            for acc, h in zip(hg, _scoring.grads(flow, weights)):
                acc.add_(h.detach())
        return hg

    def _hg_by_difference(self, model, batches, weights, stopped, device) -> list[Tensor]:
        """:math:`Hg` by a central difference of gradients along ``g``; the weights are put back exactly."""
        norm_w = torch.sqrt(sum((w.detach().double() ** 2).sum() for w in weights))
        norm_g = torch.sqrt(sum((g.double() ** 2).sum() for g in stopped))
        if float(norm_g) == 0.0:   # no gradient at all: every product is 0
            return [torch.zeros_like(w) for w in weights]
        eps = float(FD_STEP * norm_w / norm_g)
        saved = [w.detach().clone() for w in weights]
        try:
            sides = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for w, w0, g in zip(weights, saved, stopped):
                        w.copy_(w0 + sign * eps * g)
                sides.append(self._gradient(model, batches, weights, device))
        finally:
            with torch.no_grad():
                for w, w0 in zip(weights, saved):
                    w.copy_(w0)
        return [(plus - minus) / (2 * eps) for plus, minus in zip(*sides)]

    def _loss(self, model: nn.Module, batch: _scoring.Batch, device: torch.device) -> Tensor:
        return _scoring.batch_loss(model, batch, self._loss_fn, device, type(self).name,
                                   temperature=self.temperature)


def _math_attention() -> Any:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])
