"""Per-class accuracy, and its change against the dense model.

Hooker et al., "What Do Compressed Deep Neural Networks Forget?" (2020) find that pruning costs some
classes far more than the average: the worst class and the per-class change against the dense model
show it where the overall accuracy hides it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from torch_slt.evaluation.registry import HIGHER, register_metric


def per_class_accuracy(logits: Tensor, labels: Tensor, num_classes: int | None = None) -> list[float]:
    """Accuracy on the test inputs of each class (``nan`` for a class absent from ``labels``).

    Example:
        >>> import torch
        >>> per_class_accuracy(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1, 1]))
        [1.0, 0.5]
    """
    k = num_classes or logits.shape[1]
    correct = (logits.argmax(1) == labels).double()
    count = torch.bincount(labels, minlength=k).double()
    hits = torch.bincount(labels, weights=correct, minlength=k)
    return (hits / count).tolist()  # 0 / 0 = nan for an absent class


@register_metric("per_class", better={"worst_class_accuracy": HIGHER},
                 reference="Hooker et al., What Do Compressed Deep Neural Networks Forget?, 2020")
def _per_class(ctx) -> dict[str, Any]:
    accs = per_class_accuracy(ctx.logits, ctx.labels, ctx.num_classes)
    present = [a for a in accs if not math.isnan(a)]
    out: dict[str, Any] = {"per_class_accuracy": accs, "worst_class_accuracy": min(present)}
    reference = (ctx.reference or {}).get("per_class_accuracy")
    if reference and len(reference) == len(accs):
        delta = [a - b for a, b in zip(accs, reference)]
        out["per_class_delta"] = delta
        out["largest_class_drop"] = -min(d for d in delta if not math.isnan(d))
    return out
