r"""SynFlow (``synflow``): data-free pruning that iteratively conserves synaptic flow.

Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks without any data by iteratively conserving
synaptic flow", NeurIPS 2020 (https://arxiv.org/abs/2006.05467); follows the ``SynFlow`` pruner and
``prune_loop`` of the reference (``ganguli-lab/Synaptic-Flow``, ``Pruners/pruners.py``, ``prune.py``).

Scoring, on the whole model in eval mode: every floating parameter and every floating buffer of the
state_dict (weights, biases, norm affine parameters, BatchNorm running statistics, ...) is replaced by
its absolute value, in float64 (the reference's float32 over- or underflows on deep or wide nets); the
input is a single all-ones sample of the data shape; :math:`R = \sum \text{logits}` and the score of a
weight is :math:`|w \odot \partial R / \partial w|`. The model itself is never modified: the float64
copies are swapped in and the original tensors put back afterwards. Gate tensors of other torch_slt
methods already on the model (``weight_mu``, scores) keep their sign, so those gates keep their masks.

Iterations: the scores are recomputed ``iterations`` times (100 by default, as in the paper). After
iteration :math:`t` of :math:`n` the kept fraction is :math:`d^{t/n}` (``schedule="exponential"``,
default) or :math:`1 - (1 - d)\,t/n` (``"linear"``), where :math:`d = 1 - \text{sparsity}`. Weights
pruned by an earlier iteration contribute nothing to the flow and stay pruned. The last iteration keeps
exactly ``keep_count(total, sparsity)`` weights.

The input shape: ``input_shape`` (one sample, without the batch dimension, e.g. ``(3, 32, 32)``) if
given, else the shape of the inputs of ``data`` (its first batch) without their batch dimension. Only
the shape of ``data`` is used. One of the two is required: torch_slt does not guess the input of a
model. Models whose input is not a float tensor (token ids) cannot be scored this way.

Example:
    >>> import torch, torch_slt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> model = torch_slt.apply(model, "synflow", sparsity=0.9, input_shape=(8,), iterations=10)
    >>> torch_slt.report(model).kept
    18
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from torch_slt.core.validation import check_choice, is_integer
from torch_slt.core.base import FixedMaskMethod
from torch_slt.core.targets import target_tensor
from torch_slt.methods import _scoring
from torch_slt.core.registry import register_method


@register_method("synflow")
class Synflow(FixedMaskMethod):
    """Keep the weights with the largest synaptic flow ``|w * dR/dw|``, pruned iteratively, data-free.

    Args:
        sparsity: fraction of weights removed, in [0, 1). Required.
        scope: ``"global"`` (default) ranks all targeted tensors together; ``"layer"`` each alone.
        iterations: number of score-and-prune rounds (100, as in the paper; 1 = single shot).
        schedule: ``"exponential"`` (default) or ``"linear"`` kept fraction across the rounds.
        input_shape: shape of one input sample, without the batch dimension, e.g. ``(3, 32, 32)``.
        data: used only for its shape when ``input_shape`` is not given: a ``(inputs, targets)``
            batch or an iterable of batches (the first batch's ``inputs.shape[1:]``).
        amount: torch's name for ``sparsity`` (give one of the two).

    ``torch_slt.apply`` leaves ``freeze=False`` for this method (the kept weights are meant to be trained
    afterwards); ``freeze=True`` makes it a strong-ticket baseline.
    """

    description = "SynFlow: data-free, iterative |w * dR/dw| on |weights| in float64, chosen at apply"

    scoring_inputs = ("data",)

    def __init__(self, sparsity: float | None = None, scope: str = "global", iterations: int = 100,
                 schedule: str = "exponential", input_shape: Sequence[int] | None = None,
                 data: Any = None, *, amount: float | None = None, rounding: str = "torch") -> None:
        super().__init__(sparsity, scope, amount=amount, rounding=rounding)
        if not is_integer(iterations) or iterations < 1:
            raise ValueError(f"synflow: iterations={iterations!r} must be an int >= 1 (the paper uses 100)")
        self.iterations = int(iterations)
        self.schedule = check_choice("schedule", schedule, ("exponential", "linear"))
        if input_shape is not None:
            if is_integer(input_shape):
                input_shape = (input_shape,)
            try:
                valid = not isinstance(input_shape, (str, bytes)) and all(
                    is_integer(s) and s >= 1 for s in input_shape)
                shape = tuple(int(s) for s in input_shape) if valid else ()
            except TypeError:
                shape = ()
            if not shape:
                raise ValueError(
                    f"synflow: input_shape={input_shape!r} must be the shape of one sample without the "
                    f"batch dimension, a tuple of positive ints such as (3, 32, 32)"
                )
            input_shape = shape
        elif data is None:
            raise TypeError(
                "synflow: pass input_shape= (the shape of one input sample without the batch dimension, "
                "e.g. input_shape=(3, 32, 32)) or data= (a batch whose inputs give the shape)"
            )
        else:
            _scoring.check_data(data, "synflow")
        self.input_shape = input_shape
        self.data = data

    # ------------------------------------------------------------------ scores
    def density(self, t: int) -> float:
        """The kept fraction after round ``t`` of ``iterations`` (``t`` from 1)."""
        d, n = 1.0 - self.sparsity, self.iterations
        if self.schedule == "exponential":
            return d ** (t / n)
        return 1.0 - (1.0 - d) * t / n

    def scores(self, model: nn.Module, targets: list[tuple[str, nn.Module]],
               masks: list[Tensor] | None = None) -> list[Tensor]:
        """One round of SynFlow scores (float64, on the weights' devices); weights where ``masks`` is
        False count as zero (so they score 0)."""
        _check_finite_parameters(model)
        with _scoring.preserved_state(model), torch.enable_grad():
            flow = _Linearized(model, targets, self._sample_shape())
            return flow.scores(masks)

    def plan(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[dict[str, Any]]:
        return [{"mask": m} for m in self.masks(model, targets)]

    def masks(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[Tensor]:
        """The final masks after every round of the schedule."""
        masks = [torch.ones_like(target_tensor(t), dtype=torch.bool) for t in targets]
        if self.sparsity == 0.0:
            return masks
        _check_finite_parameters(model)
        with _scoring.preserved_state(model), torch.enable_grad():
            flow = _Linearized(model, targets, self._sample_shape())
            for t in range(1, self.iterations + 1):
                scores = [s.masked_fill(~m, -math.inf) for s, m in zip(flow.scores(masks), masks)]
                sparsity = self.sparsity if t == self.iterations else 1.0 - self.density(t)
                if self.scope == "global":
                    masks = self.keep_top(scores, sparsity)
                else:
                    masks = [self.keep_top([s], sparsity)[0] for s in scores]
        return masks

    def _sample_shape(self) -> tuple[int, ...]:
        if self.input_shape is not None:
            return self.input_shape
        inputs, _ = next(_scoring.iter_batches(self.data, "synflow"))
        if not isinstance(inputs, Tensor) or inputs.dim() < 2:
            raise ValueError(
                f"synflow: cannot read the input shape from data (inputs must be a tensor with a batch "
                f"dimension, got {_scoring._describe(inputs)}); pass input_shape= instead"
            )
        self.input_shape = tuple(inputs.shape[1:])
        return self.input_shape

    def init_state(self, module: nn.Module, orig: Tensor, mask: Tensor | None,
                   importance_scores: Tensor | None) -> None:
        super().init_state(module, orig, mask, importance_scores)
        self.data = None  # only its shape was needed; keep no reference on the model


def _check_finite_parameters(model: nn.Module) -> None:
    """SynFlow's flow runs through every parameter and buffer: one NaN makes every score NaN (and the
    flow would look like an overflow), so say which tensor holds it."""
    from torch_slt.core.finite import check_finite_scores

    tensors = [(n, t.detach()) for n, t in [*model.named_parameters(), *model.named_buffers()]
               if t.is_floating_point()]
    check_finite_scores([t for _, t in tensors], [n for n, _ in tensors], "synflow")


class _Linearized:
    """The model with every floating tensor replaced by a float64 copy (``|.|`` for state_dict tensors).

    Must live inside :class:`~torch_slt.methods._scoring.preserved_state`, which swaps the originals back.
    """

    def __init__(self, model: nn.Module, targets: list[tuple[str, nn.Module]],
                 sample_shape: tuple[int, ...]) -> None:
        self.model = model
        self.weights = [target_tensor(t) for t in targets]
        device = _scoring.model_device(model, targets)
        from torch_slt.core.api import mask_parameters

        # Gates of other torch_slt methods already on the model keep their sign (it is their mask).
        gates = {id(p) for p in mask_parameters(model)}
        with torch.no_grad():
            for p in model.parameters():
                if p.is_floating_point():
                    p.data = p.data.to(torch.float64) if id(p) in gates else p.data.to(torch.float64).abs()
            swapped: dict[int, Tensor] = {}
            for module in model.modules():
                for key, buf in module._buffers.items():
                    if buf is None or not buf.is_floating_point():
                        continue
                    if id(buf) not in swapped:
                        new = buf.to(torch.float64)
                        if key not in module._non_persistent_buffers_set:
                            new = new.abs()
                        swapped[id(buf)] = new
                    module._buffers[key] = swapped[id(buf)]
        self.abs_weights = [w.data for w in self.weights]
        _scoring.scoring_mode(model, self.weights)
        self.input = torch.ones((1, *sample_shape), dtype=torch.float64, device=device)

    def scores(self, masks: list[Tensor] | None) -> list[Tensor]:
        if masks is not None:
            for w, a, m in zip(self.weights, self.abs_weights, masks):
                w.data = a * m
        out = _scoring.logits(_scoring.forward(self.model, self.input, "synflow"), "synflow")
        flow = out.sum()
        if not torch.isfinite(flow):
            raise FloatingPointError(
                f"synflow: the synaptic flow R = {flow.item()} overflowed even in float64; the network is "
                f"too deep or its weights too large for SynFlow scores"
            )
        grads = _scoring.grads(flow, self.weights)
        return [(g * w.detach()).abs() for g, w in zip(grads, self.weights)]
