"""The metric registry: a metric is a function of an :class:`~torch_slt.evaluation.context.EvalContext`
that returns a flat dict, registered by name with the direction of its headline numbers.

Adding a metric is one file under ``torch_slt/evaluation/`` (decorate its function with
:func:`register_metric`) plus its import line in ``torch_slt/evaluation/__init__.py``;
:func:`torch_slt.evaluate`, the sweep plots and the LTH-PASS table then pick it up.

Example:
    >>> from torch_slt.evaluation.registry import register_metric
    >>> @register_metric("top2", better={"top2_accuracy": "higher"}, reference="-")
    ... def top2(ctx):
    ...     top = ctx.logits.topk(2, dim=1).indices
    ...     return {"top2_accuracy": float((top == ctx.labels[:, None]).any(1).float().mean())}
    >>> "top2" in list_metrics()
    True
    >>> unregister_metric("top2")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch_slt.core.errors import SLTError

if TYPE_CHECKING:
    from torch_slt.evaluation.context import EvalContext

HIGHER, LOWER = "higher", "lower"


class UnknownMetricError(SLTError, ValueError):
    """The metric name is not registered."""


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    Attributes:
        name: what ``metrics=`` selects it by.
        compute: ``compute(ctx) -> dict``; scalar values are reported, nested dicts are details.
        better: headline keys of its output -> ``"higher"`` or ``"lower"`` (what is better); these
            are the numbers plotted against sparsity and compared with the dense model (LTH-PASS).
        reference: the paper that defines it (for the docs and reports).
    """

    name: str
    compute: Callable[[EvalContext], dict[str, Any]]
    better: dict[str, str]
    reference: str


_METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, better: dict[str, str], reference: str) -> Callable:
    """Decorator registering ``compute(ctx) -> dict`` as metric ``name``."""
    bad = {k: v for k, v in better.items() if v not in (HIGHER, LOWER)}
    if bad:
        raise ValueError(f"register_metric({name!r}): better={bad} must map keys to 'higher' or 'lower'")

    def decorate(compute: Callable[[EvalContext], dict[str, Any]]) -> Callable:
        _METRICS[name] = Metric(name, compute, dict(better), reference)
        return compute

    return decorate


def unregister_metric(name: str) -> None:
    """Remove metric ``name`` (for tests and notebooks that register their own)."""
    _METRICS.pop(name, None)


def get_metric(name: str) -> Metric:
    try:
        return _METRICS[name]
    except KeyError:
        raise UnknownMetricError(f"unknown metric {name!r}; choose from "
                                 f"{', '.join(list_metrics())}") from None


def list_metrics() -> list[str]:
    """Registered metric names, in registration order."""
    return list(_METRICS)


def directions(names: list[str] | None = None) -> dict[str, str]:
    """Headline key -> ``"higher"`` / ``"lower"`` over the given metrics (default: all)."""
    out: dict[str, str] = {}
    for name in names or list_metrics():
        out.update(get_metric(name).better)
    return out
