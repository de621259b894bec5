"""Top-1 accuracy: the fraction of test inputs whose largest logit is the true class."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from torch_slt.evaluation.registry import HIGHER, register_metric


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows of ``logits`` whose argmax equals ``labels``.

    Example:
        >>> import torch
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
        0.5
    """
    return float((logits.argmax(dim=1) == labels).double().mean())


@register_metric("accuracy", better={"accuracy": HIGHER}, reference="top-1 accuracy")
def _accuracy(ctx) -> dict[str, Any]:
    return {"accuracy": accuracy(ctx.logits, ctx.labels)}
