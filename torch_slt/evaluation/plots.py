"""Pictures of an evaluation: the reliability diagram, and the sweep panels of Chen et al. 2022.

matplotlib is imported when a plot is drawn (object-oriented API, Agg canvas), as in
:mod:`torch_slt.experiment.plots`, whose figure helpers and colours these reuse.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch_slt.evaluation.registry import HIGHER, directions
from torch_slt.experiment.plots import _COLORS, _MARKERS, _figure, _save, _std


def plot_reliability(result: dict[str, Any], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Reliability diagram (Guo et al. 2017): accuracy per confidence bin as bars, the diagonal of
    perfect calibration, the gap shaded, and the ECE in the title; ``result`` is what
    ``evaluate(..., metrics=["ece"])`` returned (or its ``reliability`` entry).

    Example:
        >>> import tempfile, torch
        >>> from torch_slt.evaluation.calibration import reliability_bins
        >>> bins = reliability_bins(torch.softmax(torch.randn(50, 3), 1), torch.randint(0, 3, (50,)))
        >>> plot_reliability({"reliability": bins, "ece": 0.1}, tempfile.mkdtemp() + "/r.png").suffix
        '.png'
    """
    bins = result.get("reliability", result)
    if not isinstance(bins, dict) or "edges" not in bins:
        raise ValueError("plot_reliability(): pass the result of evaluate(..., metrics=['ece']) (it holds "
                         "'reliability')")
    edges, acc, conf, count = bins["edges"], bins["accuracy"], bins["confidence"], bins["count"]
    width = edges[1] - edges[0]
    centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    shown = [i for i, c in enumerate(count) if c > 0]
    fig = _figure(4.8, 4.8)
    ax = fig.add_subplot()
    ax.bar([centers[i] for i in shown], [acc[i] for i in shown], width=width, color=_COLORS[0],
           edgecolor="black", linewidth=0.6, label="accuracy")
    ax.bar([centers[i] for i in shown], [conf[i] - acc[i] for i in shown], bottom=[acc[i] for i in shown],
           width=width, color=_COLORS[1], alpha=0.3, edgecolor=_COLORS[1], hatch="//",
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max softmax probability)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ece = result.get("ece")
    ax.set_title(title or ("Reliability diagram" + (f", ECE {ece:.2%}" if isinstance(ece, float) else "")))
    return _save(fig, path)


_LABELS = {"accuracy": "test accuracy", "nll": "NLL", "ece": "ECE", "brier": "Brier score",
           "ood_auroc": "OoD AUROC (MSP)", "ood_fpr95": "OoD FPR@95%TPR", "corruption_accuracy":
           "accuracy under corruptions", "mce": "mCE (dense = 1)", "fgsm_accuracy": "FGSM accuracy",
           "pgd_accuracy": "PGD accuracy", "worst_class_accuracy": "worst-class accuracy"}


def plot_sweep_metrics(rows: Sequence[dict[str, Any]], path: str | os.PathLike, *,
                       dense: dict[str, Any] | None = None, keys: Sequence[str] | None = None,
                       title: str | None = None) -> Path:
    """One panel per metric, x = sparsity (%), one curve per method (mean over the rows sharing a
    method and target sparsity, e.g. seeds, with the standard deviation as error bar), the dense
    model as a black dashed line, and an arrow in each panel's title saying whether higher (↑) or
    lower (↓) is better: the convention of Chen et al., TMLR 2022.

    Args:
        rows: dicts with ``method``, ``sparsity`` (achieved fraction removed), optional ``target``,
            and the metric values (``evaluate``'s headline keys).
        dense: the dense model's results (``None``: no dashed line).
        keys: metrics to draw (default: every registered headline present in the rows).

    Example:
        >>> import tempfile
        >>> rows = [{"method": "stg", "sparsity": s, "accuracy": a, "ece": e}
        ...         for s, a, e in ((0.5, 0.9, 0.02), (0.9, 0.85, 0.04))]
        >>> dense = {"accuracy": 0.91, "ece": 0.03}
        >>> plot_sweep_metrics(rows, tempfile.mkdtemp() + "/m.png", dense=dense).suffix
        '.png'
    """
    if not rows:
        raise ValueError("plot_sweep_metrics(): rows is empty; pass one dict per ticket")
    better = directions()
    keys = [k for k in (keys or better) if any(_number(r.get(k)) for r in rows)]
    if not keys:
        raise ValueError(f"plot_sweep_metrics(): the rows hold none of the metrics {sorted(better)}")
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig = _figure(3.4 * cols + 0.4, 3.0 * nrows + 0.6)
    axes = fig.subplots(nrows, cols, squeeze=False).flatten()
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    for ax, key in zip(axes, keys):
        for i, method in enumerate(methods):
            groups: dict[float, list[tuple[float, float]]] = defaultdict(list)
            for r in rows:
                if str(r["method"]) == method and _number(r.get(key)):
                    target = round(float(r.get("target", r["sparsity"])), 6)
                    groups[target].append((float(r["sparsity"]), float(r[key])))
            if not groups:
                continue
            runs = [groups[t] for t in sorted(groups)]
            xs = [100.0 * sum(s for s, _ in g) / len(g) for g in runs]
            ys = [sum(v for _, v in g) / len(g) for g in runs]
            err = [_std([v for _, v in g]) for g in runs]
            ax.errorbar(xs, ys, yerr=err if any(err) else None, color=_COLORS[i % len(_COLORS)],
                        marker=_MARKERS[i % len(_MARKERS)], markersize=4, linewidth=1.4, capsize=2,
                        label=method)
        if dense is not None and _number(dense.get(key)):
            ax.axhline(float(dense[key]), color="black", linestyle="--", linewidth=1.2, label="dense")
        arrow = "↑" if better[key] == HIGHER else "↓"
        ax.set_title(f"{_LABELS.get(key, key)} {arrow}", fontsize=10)
        ax.set_xlabel("sparsity (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
