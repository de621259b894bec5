"""Evaluation beyond accuracy: calibration, OoD detection, natural corruptions, adversarial robustness
and per-class accuracy, for any classifier and for every ticket of a sweep (Chen et al., "Can You Win
Everything with A Lottery Ticket?", TMLR 2022). See ``docs/evaluation.md``.

One metric per file, each registered by name (:mod:`~torch_slt.evaluation.registry`); adding a metric
is a file with a ``@register_metric`` function and its import below.

Example:
    >>> import torch, torch_slt
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> result = torch_slt.evaluate(model, (torch.rand(20, 1, 4, 4), torch.randint(0, 3, (20,))),
    ...                             metrics=["accuracy", "nll", "brier"])
    >>> 0.0 <= result["accuracy"] <= 1.0
    True
"""

# The metric modules register themselves on import, in this (report) order.
# isort: off
from torch_slt.evaluation import accuracy, calibration, ood, corruptions, adversarial, per_class  # noqa: F401
# isort: on
from torch_slt.evaluation.context import EvaluationInputError
from torch_slt.evaluation.evaluate import evaluate
from torch_slt.evaluation.lth_pass import PassResult, lth_pass, lth_pass_table
from torch_slt.evaluation.registry import (Metric, UnknownMetricError, directions, get_metric, list_metrics,
                                           register_metric, unregister_metric)
from torch_slt.evaluation.settings import CORRUPTIONS, OOD_SETS, EvalSettings

__all__ = ["CORRUPTIONS", "EvalSettings", "EvaluationInputError", "Metric", "OOD_SETS", "PassResult",
           "UnknownMetricError", "directions", "evaluate", "get_metric", "list_metrics", "lth_pass",
           "lth_pass_table", "register_metric", "unregister_metric"]
