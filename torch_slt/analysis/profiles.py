"""Per-layer sparsity profiles of several tickets on one figure (Chen et al. 2022, Figure 2, for any
number of tickets): which layers each method prunes hardest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch_slt.analysis.masks import AnalysisInputError, density, masks_of


def layer_profile(ticket: Any) -> dict[str, float]:
    """``{tensor name: sparsity}`` (fraction removed) of a ticket, in model order.

    Example:
        >>> import torch
        >>> layer_profile({"a": torch.tensor([True, False]), "b": torch.tensor([False, False])})
        {'a': 0.5, 'b': 1.0}
    """
    return {name: 1.0 - density(mask) for name, mask in masks_of(ticket).items()}


def plot_layer_profiles(tickets: dict[str, Any], path: str | os.PathLike, *,
                        title: str | None = None) -> Path:
    """One line per ticket (``label -> ticket``): sparsity of each gated tensor, x in model order."""
    from torch_slt.experiment.plots import _COLORS, _MARKERS, _figure, _save

    if not tickets:
        raise AnalysisInputError("plot_layer_profiles(): no tickets given; pass {label: model or ticket "
                                 "path}")
    profiles = {label: layer_profile(t) for label, t in tickets.items()}
    names = list(dict.fromkeys(n for p in profiles.values() for n in p))
    fig = _figure(max(6.0, min(0.4 * len(names) + 3.0, 22.0)), 4.6)
    ax = fig.add_subplot()
    for i, (label, profile) in enumerate(profiles.items()):
        xs = [j for j, n in enumerate(names) if n in profile]
        ax.plot(xs, [100.0 * profile[names[j]] for j in xs], color=_COLORS[i % len(_COLORS)],
                marker=_MARKERS[i % len(_MARKERS)], linewidth=1.5, markersize=5, label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90 if len(names) > 5 else 0, fontsize=8)
    ax.set_ylabel("sparsity (% of weights removed)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    ax.set_title(title or "Per-layer sparsity of each ticket")
    return _save(fig, path)
