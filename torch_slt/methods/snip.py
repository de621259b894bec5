r"""SNIP (``snip``): keep the weights whose removal would change the loss most, ``|g * w|``.

Lee, Ajanthan, Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019
(https://arxiv.org/abs/1810.02340). Scores as the ``SNIP`` pruner of Tanaka et al.'s Synaptic-Flow
reference (``Pruners/pruners.py``): the connection sensitivity :math:`|\partial L / \partial m| =
|g \odot w|` with :math:`g = \sum_b \nabla_w L_b` summed over every batch of ``data``, computed once,
in eval mode, on the whole model; the mask keeps the ``1 - sparsity`` fraction with the largest
scores (global scope by default, exactly that many weights, ties broken by selection).

The reference divides the scores by their sum; that does not change the ranking and is skipped.

Example:
    >>> import torch, torch_slt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> batch = (torch.randn(32, 8), torch.randint(0, 3, (32,)))
    >>> model = torch_slt.apply(model, "snip", sparsity=0.9, data=batch)
    >>> torch_slt.report(model).kept
    18
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from torch_slt.methods import _scoring
from torch_slt.core.registry import register_method
from torch_slt.core.targets import target_tensor


@register_method("snip")
class Snip(_scoring.DataScoredMethod):
    """Keep the ``1 - sparsity`` fraction of weights with the largest connection sensitivity ``|g * w|``.

    Args:
        sparsity: fraction of weights removed, in [0, 1). Required.
        scope: ``"global"`` (default) ranks all targeted tensors together; ``"layer"`` each alone.
        data: one ``(inputs, targets)`` batch or an iterable of batches (a DataLoader); gradients are
            summed over all of them. Required.
        loss_fn: ``(logits, targets) -> scalar``; default cross entropy. Logits are taken from a tensor
            output, the first item of a tuple, or ``.logits`` of a Hugging Face ``ModelOutput``.
        amount: torch's name for ``sparsity`` (give one of the two).

    ``torch_slt.apply`` leaves ``freeze=False`` for this method (the kept weights are meant to be trained
    afterwards); ``freeze=True`` makes it a strong-ticket baseline.
    """

    description = "SNIP: keep the largest |grad * w| on data, chosen once at apply"

    def scores(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[Tensor]:
        who = type(self).name
        weights = [target_tensor(t) for t in targets]
        device = _scoring.model_device(model, targets)
        total = [torch.zeros_like(w) for w in weights]
        with _scoring.preserved_state(model), torch.enable_grad():
            _scoring.scoring_mode(model, weights)
            for batch in _scoring.iter_batches(self.data, who):
                loss = _scoring.batch_loss(model, batch, self._loss_fn, device, who)
                for acc, g in zip(total, _scoring.grads(loss, weights)):
                    acc.add_(g)
        return [(g * w.detach()).abs() for g, w in zip(total, weights)]
