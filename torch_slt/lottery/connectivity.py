"""Linear mode connectivity: is training from a starting point stable to the noise of SGD?

Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020
(https://arxiv.org/abs/1912.05671): from one starting point (a rewind point, with the ticket's mask fixed)
train two copies with different data order (and dropout noise), then evaluate the network at ``points``
evenly spaced weights on the straight line between the two results. The **error barrier** (the paper's
*instability*) is ``max_α E(α) - (E(0) + E(1)) / 2``; a network is *stable* when it is about 0 (the
paper uses 2 %). IMP finds matching tickets in deep networks exactly from the rewind iterations at which
the sparse network becomes stable.

Lucas et al., "Analyzing Monotonic Linear Interpolation in Neural Network Loss Landscapes", ICML 2021
(https://arxiv.org/abs/2104.11044): :func:`interpolate_from_init` evaluates the line from the initial to the
trained weights and says whether the loss decreases monotonically along it.

The line is evaluated on the networks' *effective* weights (``w ⊙ m``, the mask fixed), with
:func:`torch_slt.analysis.landscape.loss_along_line`.

Example:
    >>> error_barrier([0.10, 0.30, 0.12])
    0.19
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from torch_slt.analysis.landscape import LineResult, loss_along_line
from torch_slt.experiment.train.config import TrainConfig
from torch_slt.lottery.training import train_weights, weight_training_config


def error_barrier(errors: Sequence[float]) -> float:
    """``max(errors) - (errors[0] + errors[-1]) / 2`` (Frankle et al. 2020's instability), rounded to
    12 digits so that equal end points give exactly 0."""
    return round(max(errors) - (errors[0] + errors[-1]) / 2, 12)


@dataclass
class InstabilityResult:
    """The line between two copies trained from one starting point."""

    start_iteration: int
    seeds: tuple[int, int]
    line: LineResult

    @property
    def errors(self) -> list[float]:
        return [1.0 - a for a in self.line.accuracy]

    @property
    def barrier(self) -> float:
        """The error barrier (0.05 = 5 points of error above the mean of the two end points)."""
        return error_barrier(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {"start_iteration": self.start_iteration, "seeds": list(self.seeds), "barrier": self.barrier,
                "errors": self.errors, **self.line.to_dict()}


def instability(model: nn.Module, train: Any, test: Any, *, training: TrainConfig | None = None,
                start_iteration: int = 0, seeds: tuple[int, int] = (1, 2), points: int = 30
                ) -> InstabilityResult:
    """Train two copies of ``model`` from its current weights with data orders ``seeds``, and evaluate
    the line between them at ``points`` points on ``test``.

    Args:
        model: the starting point (e.g. an IMP ticket rewound to iteration k, mask fixed); not modified.
        training: the copies' training (as for :func:`torch_slt.lottery.imp`; Adam 1.2e-3 by default).
            ``training.seed`` is replaced by each copy's seed, which also draws its dropout noise.
        start_iteration: the iteration the starting point was taken at: the copies train the remaining
            iterations with the schedule continuing from there.
    """
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"instability(): seeds={seeds!r} must be two different data-order seeds")
    cfg = weight_training_config(training)
    copies = []
    for seed in seeds:
        twin = copy.deepcopy(model)
        train_weights(twin, train, _with_seed(cfg, seed), start_iteration=start_iteration,
                      label=f"instability copy seed {seed}")
        copies.append(twin)
    line = loss_along_line(copies[0], copies[1], test, steps=points)
    return InstabilityResult(start_iteration, (seeds[0], seeds[1]), line)


def _with_seed(cfg: TrainConfig, seed: int) -> TrainConfig:
    from dataclasses import replace

    return replace(cfg, seed=seed)


@dataclass
class MonotonicResult:
    """The line from the initial to the trained weights (Lucas et al. 2021)."""

    line: LineResult

    @property
    def max_increase(self) -> float:
        """The largest rise of the loss between two consecutive points (0 when monotonic)."""
        loss = self.line.loss
        return max([0.0] + [b - a for a, b in itertools.pairwise(loss)])

    @property
    def monotonic(self) -> bool:
        """Whether the loss never rises along the line."""
        return self.max_increase == 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"monotonic": self.monotonic, "max_increase": self.max_increase, **self.line.to_dict()}


def interpolate_from_init(initial: nn.Module, trained: nn.Module, test: Any, *,
                          points: int = 30) -> MonotonicResult:
    """Evaluate the line from ``initial`` (α = 0) to ``trained`` (α = 1) at ``points`` points on ``test``."""
    return MonotonicResult(loss_along_line(initial, trained, test, steps=points))


def plot_instability(results: dict[str, InstabilityResult], path, *, title: str | None = None):
    """Left: test error along the line between the two copies, one curve per result. Right (when the
    results come from several start iterations): the error barrier against the start iteration."""
    from torch_slt.experiment.plots import _COLORS, _figure, _save

    fig = _figure(9.0, 3.8)
    left, right = fig.subplots(1, 2)
    for i, (label, res) in enumerate(results.items()):
        left.plot(res.line.alphas, [100 * e for e in res.errors], color=_COLORS[i % len(_COLORS)],
                  marker="o", markersize=2, label=f"{label} (barrier {100 * res.barrier:.1f} pts)")
    left.set_xlabel("interpolation α (0: copy 1, 1: copy 2)")
    left.set_ylabel("test error (%)")
    left.legend(fontsize=7)
    by_start: dict[int, list[float]] = {}
    for res in results.values():
        by_start.setdefault(res.start_iteration, []).append(100 * res.barrier)
    starts = sorted(by_start)
    right.plot(starts, [sum(by_start[s]) / len(by_start[s]) for s in starts], marker="o", color=_COLORS[0])
    right.set_xlabel("start (rewind) iteration")
    right.set_ylabel("error barrier (points)")
    right.axhline(2.0, color="grey", linestyle=":", linewidth=1)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Instability: the line between two copies trained from one start", fontsize=10)
    return _save(fig, path)
