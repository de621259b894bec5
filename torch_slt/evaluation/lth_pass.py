"""LTH-PASS: does a ticket match or beat the dense network on every metric?

Chen et al., "Can You Win Everything with A Lottery Ticket?", TMLR 2022, call a ticket LTH-PASS when
it is at least as good as the dense model on every metric they measure. :func:`lth_pass` applies that
rule to the headline numbers that both results have (a number missing on either side is not judged),
with an optional tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch_slt.evaluation.registry import HIGHER, directions


@dataclass
class PassResult:
    """``passed``: no judged metric is worse than dense; ``worse``: metric -> (ticket, dense) of
    those that are; ``judged``: the metrics compared."""

    passed: bool
    worse: dict[str, tuple[float, float]] = field(default_factory=dict)
    judged: list[str] = field(default_factory=list)


def lth_pass(ticket: dict[str, Any], dense: dict[str, Any], *, keys: Sequence[str] | None = None,
             tolerance: float = 0.0) -> PassResult:
    """Compare two :func:`~torch_slt.evaluate` results metric by metric.

    Args:
        ticket, dense: results of ``torch_slt.evaluate``.
        keys: headline keys to judge (default: every registered headline present in both).
        tolerance: a ticket within ``tolerance`` (absolute) of dense still counts as not worse.

    Example:
        >>> lth_pass({"accuracy": 0.9, "ece": 0.05}, {"accuracy": 0.88, "ece": 0.04}).worse
        {'ece': (0.05, 0.04)}
    """
    better = directions()
    judged = [k for k in (keys or better) if k in better and _number(ticket.get(k)) and _number(dense.get(k))]
    worse = {}
    for key in judged:
        t, d = float(ticket[key]), float(dense[key])
        if (t < d - tolerance) if better[key] == HIGHER else (t > d + tolerance):
            worse[key] = (t, d)
    return PassResult(not worse and bool(judged), worse, judged)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def lth_pass_table(rows: Sequence[dict[str, Any]], dense: dict[str, Any], *,
                   keys: Sequence[str] | None = None, tolerance: float = 0.0) -> str:
    """Markdown table: one row per ticket (``rows`` hold ``label`` and the result), each judged metric
    with a mark where it is worse than dense, and the LTH-PASS verdict."""
    better = directions()
    judged = [k for k in (keys or better) if k in better and _number(dense.get(k))]
    arrow = {k: "↑" if better[k] == HIGHER else "↓" for k in judged}
    head = "| ticket | " + " | ".join(f"{k} {arrow[k]}" for k in judged) + " | LTH-PASS |"
    lines = [head, "|---|" + "---:|" * len(judged) + ":---:|",
             "| dense | " + " | ".join(f"{dense[k]:.4f}" for k in judged) + " | (baseline) |"]
    for row in rows:
        verdict = lth_pass(row, dense, keys=judged, tolerance=tolerance)
        cells = [(f"{row[k]:.4f}" + (" ✗" if k in verdict.worse else "")) if _number(row.get(k)) else "-"
                 for k in judged]
        mark = "**yes**" if verdict.passed else "no"
        lines.append(f"| {row.get('label', '?')} | " + " | ".join(cells) + f" | {mark} |")
    return "\n".join(lines)
