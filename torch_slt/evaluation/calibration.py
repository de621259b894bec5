"""Calibration: negative log-likelihood, expected calibration error (with the reliability diagram's
bins) and the Brier score.

* **NLL**: ``-mean_i log p_i[y_i]``, the cross entropy of the predicted distribution (lower is better).
* **ECE** (Naeini et al. 2015; Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): split
  the confidences ``max_k p_ik`` into ``M = 15`` equal-width bins ``((m-1)/M, m/M]``;
  ``ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)|``, the gap between accuracy and mean confidence,
  weighted by the bin's share of the samples. 0 for a perfectly calibrated predictor.
* **Brier score** (Brier, Monthly Weather Review 1950): ``mean_i sum_k (p_ik - 1[y_i = k])^2``, the
  squared error of the probability vector against the one-hot label, in [0, 2] (lower is better).

Pure torch: these are a few reductions, so no dependency is worth it (torchmetrics' ECE is the same
formula but would add a package to the core install).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_slt.evaluation.registry import LOWER, register_metric


def negative_log_likelihood(logits: Tensor, labels: Tensor) -> float:
    """Mean ``-log softmax(logits)[label]``.

    Example:
        >>> import math, torch
        >>> nll = negative_log_likelihood(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
        >>> abs(nll - math.log(4)) < 1e-6
        True
    """
    return float(F.cross_entropy(logits.float(), labels))


def reliability_bins(probs: Tensor, labels: Tensor, bins: int = 15) -> dict[str, list[float]]:
    """Per equal-width confidence bin ``((m-1)/M, m/M]``: sample count, accuracy and mean confidence
    (0 for empty bins), the data of a reliability diagram."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    # bin m holds confidences in ((m-1)/M, m/M]; ceil(c*M)-1 puts exact edges in the lower bin
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins).float()
    acc = torch.bincount(index, weights=correct, minlength=bins) / count.clamp(min=1)
    conf = torch.bincount(index, weights=confidence.double(), minlength=bins).float() / count.clamp(min=1)
    return {"count": count.tolist(), "accuracy": acc.tolist(), "confidence": conf.tolist(),
            "edges": [m / bins for m in range(bins + 1)]}


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width bins (see the module docstring).

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.8, 0.2]] * 5)       # 80 % confident, 4 of 5 right
        >>> expected_calibration_error(probs, torch.tensor([0, 0, 0, 0, 1]))
        0.0
    """
    data = reliability_bins(probs, labels, bins)
    count, acc, conf = (torch.tensor(data[k], dtype=torch.float64)
                        for k in ("count", "accuracy", "confidence"))
    ece = float((count / count.sum() * (acc - conf).abs()).sum())
    return 0.0 if abs(ece) < 1e-7 else ece  # float32 confidences: exact zero when calibrated


def brier_score(probs: Tensor, labels: Tensor) -> float:
    """Mean over samples of ``sum_k (p_k - onehot_k)^2``.

    Example:
        >>> import torch
        >>> brier_score(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([0, 0]))
        0.25
    """
    onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    return float(((probs - onehot) ** 2).sum(dim=1).mean())


@register_metric("nll", better={"nll": LOWER}, reference="negative log-likelihood (cross entropy)")
def _nll(ctx) -> dict[str, Any]:
    return {"nll": negative_log_likelihood(ctx.logits, ctx.labels)}


@register_metric("ece", better={"ece": LOWER},
                 reference="Guo et al., On Calibration of Modern Neural Networks, ICML 2017")
def _ece(ctx) -> dict[str, Any]:
    bins = ctx.settings.bins
    return {"ece": expected_calibration_error(ctx.probs, ctx.labels, bins),
            "reliability": reliability_bins(ctx.probs, ctx.labels, bins)}


@register_metric("brier", better={"brier": LOWER}, reference="Brier, Monthly Weather Review 1950")
def _brier(ctx) -> dict[str, Any]:
    return {"brier": brier_score(ctx.probs, ctx.labels)}
