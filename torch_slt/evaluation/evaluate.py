"""``torch_slt.evaluate``: every registered metric (or the ones asked for) of a model on test data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from torch_slt.evaluation.context import EvalContext, EvaluationInputError, as_tensors, pixels_of
from torch_slt.evaluation.registry import get_metric, list_metrics
from torch_slt.evaluation.settings import EvalSettings


def evaluate(model: nn.Module, data: Any, metrics: Sequence[str] | str | None = None, *,
             settings: EvalSettings | None = None,
             reference: dict[str, Any] | nn.Module | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on the test data with the registered metrics.

    Args:
        model: any classifier returning logits (a finalized ticket, a gated model: its hard masks are
            used, or the dense network). Run in eval mode; its mode is restored and nothing in it changes.
        data: a torch_slt ``DataSplits`` (its test split is used), a Dataset of ``(input, label)`` or
            an ``(inputs, labels)`` pair of tensors, normalised as the model expects.
        metrics: names from :func:`~torch_slt.evaluation.list_metrics` (``accuracy``, ``nll``, ``ece``,
            ``brier``, ``ood``, ``corruptions``, ``adversarial``, ``per_class``); default all.
        settings: :class:`~torch_slt.evaluation.EvalSettings` (bins, OoD sets, severities, epsilons...).
        reference: the dense model's results (a dict this function returned) or the dense model
            itself (then evaluated first with the same metrics); gives the mCE and the per-class
            change, which are relative to it.

    Returns:
        A flat dict: the headline numbers (``accuracy``, ``nll``, ``ece``, ``brier``, ``ood_auroc``,
        ``ood_fpr95``, ``corruption_accuracy``, ``mce`` with a reference, ``fgsm_accuracy``,
        ``pgd_accuracy`` with PGD, ``worst_class_accuracy``) and their details (``reliability``,
        ``ood``, ``corruption_errors``, ``fgsm``, ``per_class_accuracy``...), plus ``metrics`` and
        ``n`` (test inputs). ``torch_slt.evaluation.directions()`` says which way each headline is better.

    Example:
        >>> import torch, torch_slt
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(30, 1, 4, 4), torch.randint(0, 3, (30,))
        >>> result = torch_slt.evaluate(model, (x, y), metrics=["accuracy", "ece"])
        >>> sorted(k for k, v in result.items() if isinstance(v, float))
        ['accuracy', 'ece']
    """
    settings = settings or EvalSettings()
    if not isinstance(settings, EvalSettings):
        raise EvaluationInputError(f"evaluate(): settings must be an EvalSettings, got "
                                   f"{type(settings).__name__}")
    names = _metric_names(metrics)
    if isinstance(reference, nn.Module):
        reference = evaluate(reference, data, names, settings=settings)
    if reference is not None and not isinstance(reference, dict):
        raise EvaluationInputError(f"evaluate(): reference must be the dense model or the dict evaluate() "
                                   f"returned for it, got {type(reference).__name__}")
    inputs, labels = as_tensors(data)
    device = torch.device(settings.device) if settings.device else next(
        (p.device for p in model.parameters()), torch.device("cpu"))
    num_classes = _num_classes(model, inputs[:1].to(device))
    _check_labels(labels, num_classes)
    _warn_about_gates(model)
    ctx = EvalContext(model, inputs, labels, settings, pixels_of(data, inputs, settings), device, num_classes,
                      reference=reference)
    was_training = model.training
    model.eval()
    result: dict[str, Any] = {"metrics": names, "n": len(labels)}
    try:
        for name in names:
            result.update(get_metric(name).compute(ctx))
    finally:
        model.train(was_training)
    return result


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Labels must index the model's outputs: an out-of-range label would raise deep inside the cross
    entropy (or, for accuracy, silently never match)."""
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        values = sorted({int(v) for v in labels[bad][:1000].tolist()})
        shown = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
        raise EvaluationInputError(
            f"evaluate(): {int(bad.sum())} label(s) are outside 0..{num_classes - 1} (the model outputs "
            f"{num_classes} classes): {shown}. Labels must be class indices of the model's outputs; check "
            f"that the data and the model have the same classes (and that labels start at 0).")


def _warn_about_gates(model: nn.Module) -> None:
    """A gated model evaluates its hard masks: say so when they keep nothing (or look unfinished)."""
    from torch_slt.core.api import is_gated
    from torch_slt.core.health import warn_about_ticket

    if is_gated(model):
        warn_about_ticket(model, "evaluate()")


def _metric_names(metrics: Sequence[str] | str | None) -> list[str]:
    if metrics is None:
        return list_metrics()
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    names = list(dict.fromkeys(metrics))
    for name in names:
        get_metric(name)  # raises UnknownMetricError naming the choices before anything runs
    if not names:
        raise EvaluationInputError(f"evaluate(): metrics is empty; choose from {', '.join(list_metrics())}")
    return names


@torch.no_grad()
def _num_classes(model: nn.Module, one: torch.Tensor) -> int:
    from torch_slt.evaluation.context import _logits

    was_training = model.training
    model.eval()
    try:
        return int(_logits(model(one)).shape[-1])
    finally:
        model.train(was_training)

