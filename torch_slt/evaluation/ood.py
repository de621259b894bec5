"""Out-of-distribution detection with the maximum softmax probability (MSP).

Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution Examples in
Neural Networks", ICLR 2017: score every input by ``max_k softmax(logits)_k``; in-distribution test
inputs are the positives, OoD inputs the negatives.

* **AUROC**: the probability that a random in-distribution input scores higher than a random OoD
  input (ties count one half), i.e. the Mann-Whitney U statistic over ``n_in * n_out`` (higher is
  better; 0.5 is chance).
* **FPR@95%TPR**: the fraction of OoD inputs scoring at least the threshold that keeps 95 % of the
  in-distribution inputs (lower is better).

Both are computed in torch from ranks (a sort), so the metric works with the core install; the tests
check the AUROC against scikit-learn's ``roc_auc_score``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from torch_slt.evaluation.context import EvaluationInputError
from torch_slt.evaluation.registry import HIGHER, LOWER, register_metric


def auroc(positive: Tensor, negative: Tensor) -> float:
    """Area under the ROC curve of scores ``positive`` (should be high) against ``negative``.

    Example:
        >>> import torch
        >>> auroc(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.85]))
        0.75
    """
    n_pos, n_neg = positive.numel(), negative.numel()
    if n_pos == 0 or n_neg == 0:
        raise EvaluationInputError(f"auroc(): need scores on both sides, got {n_pos} positive and {n_neg} "
                                   f"negative")
    scores = torch.cat([positive.flatten(), negative.flatten()]).double()
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    # average rank (1-based) of each distinct value: ties share the mean of the ranks they span
    ends = counts.cumsum(0).double()
    ranks = (ends - (counts.double() - 1) / 2)[inverse]
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def fpr_at_tpr(positive: Tensor, negative: Tensor, tpr: float = 0.95) -> float:
    """Fraction of ``negative`` scores >= the largest threshold that keeps ``tpr`` of ``positive``.

    Example:
        >>> import torch
        >>> fpr_at_tpr(torch.arange(100.0), torch.tensor([3.0, 10.0, 50.0]))
        0.6666666666666666
    """
    ordered = positive.flatten().sort(descending=True).values
    threshold = ordered[max(math.ceil(tpr * ordered.numel()) - 1, 0)]
    return float((negative >= threshold).double().mean())


def max_softmax(logits: Tensor) -> Tensor:
    """The MSP score of every row."""
    return logits.softmax(dim=1).max(dim=1).values


@register_metric("ood", better={"ood_auroc": HIGHER, "ood_fpr95": LOWER},
                 reference="Hendrycks & Gimpel, ICLR 2017 (maximum softmax probability)")
def _ood(ctx) -> dict[str, Any]:
    from torch_slt.evaluation.ood_sets import build_ood_sets

    sets = build_ood_sets(ctx)
    if not sets:
        return {"ood": {}}
    inside = max_softmax(ctx.logits)
    per_set = {}
    for name, inputs in sets.items():
        outside = max_softmax(ctx.predict(inputs))
        per_set[name] = {"auroc": auroc(inside, outside), "fpr95": fpr_at_tpr(inside, outside),
                         "n": len(inputs)}
    return {"ood_auroc": sum(v["auroc"] for v in per_set.values()) / len(per_set),
            "ood_fpr95": sum(v["fpr95"] for v in per_set.values()) / len(per_set),
            "ood": per_set}
