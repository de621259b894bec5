"""Loss along a line between two tickets (or from the random network to a ticket).

A strong ticket's function is its effective weights ``w ⊙ m``: the frozen random weights with the
removed ones at zero (``torch_slt.finalize`` writes exactly that into the weights). The line between
two tickets is ``θ(α) = (1 - α) θ_A + α θ_B`` over their effective state dicts, so the masks and the
frozen weights are both accounted for: two tickets of the same random network differ only where their
masks differ, and the line from the random dense network (``m = 1``) to a ticket fades the removed
weights out. Floating-point buffers (batch-norm statistics) are interpolated as well; integer buffers
are taken from A.

**Barrier height** (Frankle et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis",
ICML 2020): ``max_α [L(θ(α)) - ((1 - α) L(θ_A) + α L(θ_B))]``, the largest rise of the loss above
the straight line between the endpoints (0 when the path is convex or flat), here for the test loss
and for the test error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_slt.analysis.masks import AnalysisInputError
from torch_slt.core.api import finalize, is_gated


@dataclass
class LineResult:
    alphas: list[float]
    loss: list[float]
    accuracy: list[float]
    loss_barrier: float
    error_barrier: float

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def effective_state(model: nn.Module) -> dict[str, Tensor]:
    """The state dict whose gated weights are ``w ⊙ m`` (a gated model is finalized on a copy)."""
    if is_gated(model):
        model = finalize(copy.deepcopy(model))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def barrier(values: list[float], alphas: list[float]) -> float:
    """``max_α [v(α) - ((1 - α) v(0) + α v(1))]`` for values sampled at ``alphas`` (from 0 to 1).

    Example:
        >>> barrier([1.0, 3.0, 1.0], [0.0, 0.5, 1.0])
        2.0
    """
    first, last = values[0], values[-1]
    return max(v - ((1 - a) * first + a * last) for v, a in zip(values, alphas))


@torch.no_grad()
def loss_along_line(model_a: nn.Module, model_b: nn.Module, data: Any, *, steps: int = 11,
                    batch_size: int = 1000) -> LineResult:
    """Test loss and accuracy at ``steps`` evenly spaced points from ``model_a`` (α = 0) to
    ``model_b`` (α = 1), and the barrier heights.

    Args:
        model_a, model_b: two models of one architecture (tickets, gated models, or the random dense
            network built from the ticket's spec for the random-to-ticket line). Not modified.
        data: test data as for :func:`torch_slt.evaluate`.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 3)
        >>> line = loss_along_line(model, model, (torch.randn(8, 4), torch.randint(0, 3, (8,))), steps=3)
        >>> line.loss_barrier
        0.0
    """
    from torch_slt.evaluation.context import as_tensors

    if steps < 2:
        raise AnalysisInputError(f"loss_along_line(): steps={steps} must be at least 2 (the two endpoints)")
    a, b = effective_state(model_a), effective_state(model_b)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise AnalysisInputError("loss_along_line(): the two models have different state dict keys or "
                                 "shapes; pass two tickets of the same architecture")
    inputs, labels = as_tensors(data)
    probe = copy.deepcopy(model_a)
    if is_gated(probe):
        finalize(probe)
    probe.eval()
    device = next((p.device for p in probe.parameters()), torch.device("cpu"))
    alphas = [i / (steps - 1) for i in range(steps)]
    losses, accs = [], []
    for alpha in alphas:
        probe.load_state_dict({k: torch.lerp(a[k], b[k], alpha) if a[k].is_floating_point() else a[k]
                               for k in a})
        total_loss, correct = 0.0, 0
        for x, y in zip(inputs.split(batch_size), labels.split(batch_size)):
            logits = probe(x.to(device)).float()
            y = y.to(device)
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        losses.append(total_loss / len(labels))
        accs.append(correct / len(labels))
    errors = [1.0 - acc for acc in accs]
    return LineResult(alphas, losses, accs, barrier(losses, alphas), barrier(errors, alphas))


def plot_line(lines: dict[str, LineResult], path, *, title: str | None = None):
    """Test loss (left) and accuracy (right) against α, one curve per labelled line."""
    from torch_slt.experiment.plots import _COLORS, _figure, _save

    fig = _figure(9.0, 3.8)
    left, right = fig.subplots(1, 2)
    for i, (label, line) in enumerate(lines.items()):
        color = _COLORS[i % len(_COLORS)]
        left.plot(line.alphas, line.loss, color=color, marker="o", markersize=3,
                  label=f"{label} (barrier {line.loss_barrier:.3f})")
        right.plot(line.alphas, [100 * a for a in line.accuracy], color=color, marker="o", markersize=3,
                   label=f"{label} (error barrier {100 * line.error_barrier:.1f} pts)")
    left.set_ylabel("test loss")
    right.set_ylabel("test accuracy (%)")
    for ax in (left, right):
        ax.set_xlabel("α (0: A, 1: B)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "Loss along the line between two tickets' effective weights", fontsize=10)
    return _save(fig, path)
