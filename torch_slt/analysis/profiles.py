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
    """The sparsity of each gated tensor (x, in model order) for every ticket (``label -> ticket``).

    One marker per ticket and tensor, side by side within a tensor's column; no line joins two
    tensors, since separate layers are not points of one curve. Columns are separated by faint
    vertical lines."""
    from torch_slt.experiment.plots import _COLORS, _MARKERS, _figure, _save

    if not tickets:
        raise AnalysisInputError("plot_layer_profiles(): no tickets given; pass {label: model or ticket "
                                 "path}")
    profiles = {label: layer_profile(t) for label, t in tickets.items()}
    names = list(dict.fromkeys(n for p in profiles.values() for n in p))
    fig = _figure(max(6.5, min(0.5 * len(names) + 4.5, 24.0)), 4.6)
    ax = fig.add_subplot()
    count = len(profiles)
    spread = min(0.7, 0.12 * count)   # the width of one column the markers of a tensor share
    for i, (label, profile) in enumerate(profiles.items()):
        offset = (i - (count - 1) / 2) * (spread / max(count - 1, 1)) if count > 1 else 0.0
        xs = [j for j, n in enumerate(names) if n in profile]
        ax.plot([x + offset for x in xs], [100.0 * profile[names[j]] for j in xs], linestyle="none",
                color=_COLORS[i % len(_COLORS)], marker=_MARKERS[i % len(_MARKERS)], markersize=6,
                markeredgecolor="white", markeredgewidth=0.5, label=label)
    for j in range(len(names) - 1):
        ax.axvline(j + 0.5, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90 if len(names) > 5 else 0, fontsize=8)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_xlabel("gated tensor, in model order")
    ax.set_ylabel("sparsity (% of weights removed)")
    ax.set_ylim(0, 102)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8, title="ticket", title_fontsize=8)
    ax.set_title(title or "Per-layer sparsity of each ticket")
    return _save(fig, path)
