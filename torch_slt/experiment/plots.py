"""The two pictures of a ticket search: per-layer sparsity, and accuracy against sparsity.

matplotlib is imported only when a plot is drawn, and only through its object-oriented API with the
Agg canvas, so plotting never changes the caller's pyplot backend or needs a display.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from torch_slt.core.report import SparsityReport

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError('plots need matplotlib: pip install "torch-slt[plot]"') from err
    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    fig.savefig(path)
    return path


def _short(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


#: Height of a two-line bar label of :func:`plot_layer_sparsity`, in % of the y axis (fontsize 7).
_LABEL_HEIGHT = 11.0
#: Half the band around the overall line that no bar label may cross.
_LINE_BAND = 1.5


def label_position(height: float, line: float) -> tuple[float, bool]:
    """Where a bar's two-line label starts (its bottom, in % of the y axis), and whether it is inside
    the bar (white on the bar) rather than above it.

    Above the bar when that keeps it clear of the overall line; else inside the bar, at its foot, when
    the bar is tall enough and the foot is clear too; else above the line."""
    def clear(bottom: float) -> bool:
        return bottom > line + _LINE_BAND or bottom + _LABEL_HEIGHT < line - _LINE_BAND

    above = height + 1.0
    if clear(above):
        return above, False
    foot = 2.0
    if height >= foot + _LABEL_HEIGHT + 1.0 and clear(foot):
        return foot, True
    return line + _LINE_BAND + 0.5, False


def plot_layer_sparsity(report: SparsityReport, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Bar chart of the fraction of weights removed in each gated layer, the view that shows which
    layers a method prunes most, with the overall sparsity as a dashed line. Layers up to 16 get
    their sparsity and size written on the bar. Saved at ``path``; the suffix picks the format (PNG,
    SVG, PDF).

    Example:
        >>> import tempfile, torch, torch_slt
        >>> model = torch_slt.apply(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)),
        ...                         "magnitude", sparsity=0.5)
        >>> path = plot_layer_sparsity(torch_slt.report(model), tempfile.mkdtemp() + "/layers.png")
        >>> path.stat().st_size > 0
        True
    """
    if not isinstance(report, SparsityReport):
        raise TypeError(f"plot_layer_sparsity(): expected a SparsityReport (torch_slt.report(model)), "
                        f"got {type(report).__name__}")
    if not report.layers:
        raise ValueError("plot_layer_sparsity(): the report has no layers; is the model gated (or finalized "
                         "from a gated model)?")
    layers = report.layers
    n = len(layers)
    fig = _figure(max(6.0, min(0.38 * n + 2.5, 24.0)), 4.8)
    ax = fig.add_subplot()
    xs = range(n)
    values = [100.0 * r.sparsity for r in layers]
    bars = ax.bar(xs, values, color=_COLORS[0], width=0.75, label="per layer")
    ax.axhline(100.0 * report.sparsity, color=_COLORS[1], linestyle="--", linewidth=1.5,
               label=f"overall {report.sparsity:.1%} ({_short(report.total - report.kept)} of "
                     f"{_short(report.total)} weights removed)")
    overall = 100.0 * report.sparsity
    if n <= 16:
        for bar, r in zip(bars, layers):
            y, inside = label_position(100.0 * r.sparsity, overall)
            ax.annotate(f"{r.sparsity:.0%}\n{_short(r.total)}", (bar.get_x() + bar.get_width() / 2, y),
                        ha="center", va="bottom", fontsize=7, color="white" if inside else "black")
    ax.set_xticks(list(xs))
    rotate = n > 6 or max(len(r.name) for r in layers) > 12
    ax.set_xticklabels([r.name for r in layers], rotation=90 if rotate else 0, fontsize=8 if n > 12 else 9)
    ax.set_xlabel("layer (gated tensor)" + ("; bar labels: sparsity, weights in layer" if n <= 16 else ""))
    ax.set_ylabel("sparsity (% of weights removed)")
    ax.set_ylim(0, 100 + (_LABEL_HEIGHT + 2 if n <= 16 else 3))
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "Per-layer sparsity")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)  # off the bars and labels
    return _save(fig, path)


def plot_accuracy_vs_sparsity(rows: list[dict[str, Any]], path: str | os.PathLike, *,
                              dense_accuracy: float | None = None, title: str | None = None,
                              chance_accuracy: float | None = None) -> Path:
    """Test accuracy against sparsity, one line per method, the dense baseline as a dashed line, the
    chance level (``chance_accuracy``) as a dotted one; the legend is outside the axes, right of them,
    so it never covers a point.

    Args:
        rows: one dict per run: ``{"method": str, "sparsity": float, "accuracy": float}`` with
            ``sparsity`` the achieved fraction of weights removed and ``accuracy`` a fraction in
            [0, 1]. Runs with the same method and the same optional ``"target"`` (the requested
            sparsity; by default the achieved one) are averaged, several seeds for instance: the point
            is at their mean sparsity and mean accuracy, with the standard deviation as error bar.
        path: the image file to write.
        dense_accuracy: accuracy of the dense network with trained weights, drawn dashed.
        title: the plot title.
        chance_accuracy: accuracy of guessing (``1 / classes``), drawn dotted: a ticket on it learned
            nothing.

    Example:
        >>> import tempfile
        >>> rows = [{"method": "stg", "sparsity": 0.5, "accuracy": 0.9},
        ...         {"method": "stg", "sparsity": 0.9, "accuracy": 0.8}]
        >>> plot_accuracy_vs_sparsity(rows, tempfile.mkdtemp() + "/curve.png", dense_accuracy=0.95).suffix
        '.png'
    """
    if not rows:
        raise ValueError("plot_accuracy_vs_sparsity(): rows is empty; pass one dict per run with 'method', "
                         "'sparsity' and 'accuracy'")
    groups: dict[str, dict[float, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for i, row in enumerate(rows):
        missing = [k for k in ("method", "sparsity", "accuracy") if k not in row]
        if missing:
            raise ValueError(f"plot_accuracy_vs_sparsity(): row {i} ({row!r}) lacks {missing}")
        sparsity, accuracy = float(row["sparsity"]), float(row["accuracy"])
        if not (0.0 <= sparsity <= 1.0 and 0.0 <= accuracy <= 1.0):
            raise ValueError(f"plot_accuracy_vs_sparsity(): row {i} has sparsity={sparsity}, "
                             f"accuracy={accuracy}; both must be fractions in [0, 1]")
        target = row.get("target", sparsity)
        groups[str(row["method"])][round(float(target), 6)].append((sparsity, accuracy))
    if dense_accuracy is not None and not 0.0 <= float(dense_accuracy) <= 1.0:
        raise ValueError(f"plot_accuracy_vs_sparsity(): dense_accuracy={dense_accuracy} must be in [0, 1]")
    if chance_accuracy is not None and not 0.0 <= float(chance_accuracy) <= 1.0:
        raise ValueError(f"plot_accuracy_vs_sparsity(): chance_accuracy={chance_accuracy} must be in [0, 1]")
    fig = _figure(8.2, 4.8)
    ax = fig.add_subplot()
    lows = []
    for i, (method, points) in enumerate(groups.items()):
        runs = [points[t] for t in sorted(points)]
        xs = [100.0 * sum(s for s, _ in r) / len(r) for r in runs]
        means = [100.0 * sum(a for _, a in r) / len(r) for r in runs]
        stds = [100.0 * _std([a for _, a in r]) for r in runs]
        color, marker = _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)]
        ax.errorbar(xs, means, yerr=stds if any(stds) else None, color=color, marker=marker,
                    linewidth=1.8, markersize=6, capsize=3, label=method)
        lows.append(min(m - s for m, s in zip(means, stds)))
    if dense_accuracy is not None:
        ax.axhline(100.0 * dense_accuracy, color="black", linestyle="--", linewidth=1.3,
                   label=f"dense, trained weights ({dense_accuracy:.1%})")
        lows.append(100.0 * dense_accuracy)
    if chance_accuracy is not None:
        ax.axhline(100.0 * chance_accuracy, color="0.4", linestyle=":", linewidth=1.5,
                   label=f"chance ({chance_accuracy:.1%})")
        lows.append(100.0 * chance_accuracy)
    ax.set_xlabel("sparsity (% of weights removed)")
    ax.set_ylabel("test accuracy (%)")
    xs_all = [100.0 * s for points in groups.values() for runs in points.values() for s, _ in runs]
    pad = max(2.0, 0.05 * (max(xs_all) - min(xs_all)))
    ax.set_xlim(max(0.0, min(xs_all) - pad), min(100.0, max(xs_all) + pad))
    ax.set_ylim(max(0.0, 5 * math.floor((min(lows) - 3) / 5)), 100.5)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside right upper", frameon=False)  # never over a point
    ax.set_title(title or "Test accuracy against sparsity")
    return _save(fig, path)


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
