"""The lottery ticket picture: test accuracy against the percent of weights remaining (Frankle & Carbin
2019, Figures 3-4), one curve per network kind (the ticket and its controls), mean and spread over runs."""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from torch_slt.lottery.imp import TICKET, IMPResult

_LABELS = {TICKET: "winning ticket (IMP)", "reinit": "random re-init", "random_mask": "random mask",
           "shuffle": "shuffled (mask + weights)", "resample": "weights resampled"}


def curves(results: Sequence[IMPResult], metric: str = "early_test_accuracy"
           ) -> dict[str, list[tuple[float, float, float, float, int]]]:
    """``{kind: [(percent remaining, mean, min, max, runs), ...]}`` over the runs, per round."""
    grouped: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        for row in result.rows:
            value = getattr(row, metric)
            if value is not None:
                grouped[row.kind][row.round].append((100 * row.remaining, 100 * value))
    out = {}
    for kind, rounds in grouped.items():
        out[kind] = [(statistics.fmean(p for p, _ in pts), statistics.fmean(v for _, v in pts),
                      min(v for _, v in pts), max(v for _, v in pts), len(pts))
                     for _, pts in sorted(rounds.items())]
    return out


def plot_imp(results: Sequence[IMPResult], path: str | os.PathLike, *, metric: str = "early_test_accuracy",
             title: str | None = None) -> Path:
    """Test accuracy (``metric``: at the early-stopping iteration by default) against the percent of weights
    remaining, log scale from 100 % down; a line per kind with a band from the lowest to the highest run;
    the dense network (round 0) as a dotted line.

    Example:
        >>> import tempfile, torch
        >>> from torch_slt.experiment.train import TrainConfig
        >>> from torch_slt.lottery import IMPConfig, imp
        >>> data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
        >>> res = imp(torch.nn.Sequential(torch.nn.Linear(4, 2)), data, test=data, config=IMPConfig(rounds=1),
        ...           training=TrainConfig(epochs=1, quiet=True))
        >>> plot_imp([res], tempfile.mkdtemp() + "/imp.png").stat().st_size > 0
        True
    """
    from torch_slt.experiment.plots import _COLORS, _MARKERS, _figure, _save

    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    lines = curves(results, metric)
    kinds = [TICKET] + sorted(k for k in lines if k != TICKET)
    for i, kind in enumerate(k for k in kinds if k in lines):
        pts = lines[kind]
        x = [p[0] for p in pts]
        ax.plot(x, [p[1] for p in pts], color=_COLORS[i % len(_COLORS)], marker=_MARKERS[i % len(_MARKERS)],
                markersize=3, label=f"{_LABELS.get(kind, kind)} (n={max(p[4] for p in pts)})")
        ax.fill_between(x, [p[2] for p in pts], [p[3] for p in pts], color=_COLORS[i % len(_COLORS)], alpha=0.15)
    if lines.get(TICKET):
        ax.axhline(lines[TICKET][0][1], color="grey", linestyle=":", linewidth=1, label="dense (round 0)")
    ax.set_xscale("log")
    ax.invert_xaxis()
    percent_ticks(ax, [p[0] for p in lines.get(TICKET, [])])
    ax.set_xlabel("percent of weights remaining")
    ax.set_ylabel("test accuracy (%)" + (" at early stop" if metric.startswith("early") else " at the end"))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title or "Iterative magnitude pruning with rewinding", fontsize=10)
    return _save(fig, path)


def percent_ticks(ax, remaining: list[float]) -> None:
    """Ticks at (at most 8 of) the rounds' remaining percentages, written as plain numbers."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if not remaining:
        return
    step = max(1, -(-len(remaining) // 8))
    ax.xaxis.set_major_locator(FixedLocator(remaining[::step]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
