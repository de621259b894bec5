"""Mask overlap: do two methods, or two seeds, find the same subnetwork?

The **Jaccard overlap** of two masks (sets of kept weights) is ``|A ∩ B| / |A ∪ B|``: 1 for identical
masks, 0 for disjoint ones. It is computed over all gated weights together and per tensor.

**Chance overlap.** Two masks that keep ``k_a`` and ``k_b`` of ``n`` weights at positions drawn
independently and uniformly share on average ``k_a k_b / n`` weights (hypergeometric mean), so their
expected Jaccard overlap is close to ``d_a d_b / (d_a + d_b - d_a d_b)`` with densities
``d = k / n`` (the ratio of expected intersection to expected union; the two agree to ``O(1/n)``).
Overall, the chance value keeps each layer's densities (random positions, the same per-layer
sparsity): ``sum_l n_l d_al d_bl / (K_a + K_b - sum_l n_l d_al d_bl)``. Overlap well above chance means
the two tickets agree on which weights matter, beyond their layer-wise sparsity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from torch_slt.analysis.masks import AnalysisInputError, masks_of


@dataclass
class LayerOverlap:
    name: str
    jaccard: float
    chance: float
    density_a: float
    density_b: float
    total: int


@dataclass
class Overlap:
    """The overlap of two tickets, overall and per tensor (the tensors both gate)."""

    jaccard: float
    chance: float
    layers: list[LayerOverlap] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"jaccard": self.jaccard, "chance": self.chance,
                "layers": [vars(layer) for layer in self.layers]}

    def to_markdown(self) -> str:
        lines = ["| tensor | weights | density A | density B | Jaccard | chance |",
                 "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r.name} | {r.total:,} | {r.density_a:.2%} | {r.density_b:.2%} | {r.jaccard:.4f} | "
                  f"{r.chance:.4f} |" for r in self.layers]
        total = sum(r.total for r in self.layers)
        lines.append(f"| **all** | {total:,} | | | **{self.jaccard:.4f}** | {self.chance:.4f} |")
        return "\n".join(lines)


def chance_jaccard(density_a: float, density_b: float) -> float:
    """Expected Jaccard overlap of independent uniformly random masks at these densities.

    Example:
        >>> round(chance_jaccard(0.1, 0.1), 4)    # two 90 %-sparse random masks
        0.0526
    """
    union = density_a + density_b - density_a * density_b
    return density_a * density_b / union if union > 0 else 1.0


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a ∩ b| / |a ∪ b|`` of two boolean masks (1 when both are empty)."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def mask_overlap(a: Any, b: Any) -> Overlap:
    """Jaccard overlap of two tickets (models, ticket files or dicts of masks; see
    :func:`~torch_slt.analysis.masks.masks_of`), overall and per tensor, with the chance values.

    Raises:
        ValueError: the tickets share no gated tensor, or a shared tensor has another shape.

    Example:
        >>> import torch
        >>> m = {"w": torch.tensor([True, False, True, True])}
        >>> mask_overlap(m, m).jaccard
        1.0
    """
    ma, mb = masks_of(a), masks_of(b)
    shared = [k for k in ma if k in mb]
    if not shared:
        raise AnalysisInputError(f"mask_overlap(): the tickets share no gated tensor (A: {sorted(ma)[:4]}, "
                                 f"B: {sorted(mb)[:4]}); compare tickets of the same architecture")
    layers, inter, union, expected = [], 0, 0, 0.0
    kept_a = kept_b = 0
    for name in shared:
        x, y = ma[name], mb[name]
        if x.shape != y.shape:
            raise AnalysisInputError(f"mask_overlap(): tensor {name!r} has shape {tuple(x.shape)} in A and "
                                     f"{tuple(y.shape)} in B; compare tickets of the same architecture")
        n, da, db = x.numel(), float(x.double().mean()), float(y.double().mean())
        layers.append(LayerOverlap(name, jaccard(x, y), chance_jaccard(da, db), da, db, n))
        inter += int((x & y).sum())
        union += int((x | y).sum())
        kept_a += int(x.sum())
        kept_b += int(y.sum())
        expected += n * da * db
    chance_union = kept_a + kept_b - expected
    return Overlap(inter / union if union else 1.0,
                   expected / chance_union if chance_union > 0 else 1.0, layers)


def overlap_matrix(tickets: Sequence[Any]) -> torch.Tensor:
    """``T x T`` matrix of overall Jaccard overlaps (symmetric, ones on the diagonal)."""
    masks = [masks_of(t) for t in tickets]
    n = len(masks)
    out = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = mask_overlap(masks[i], masks[j]).jaccard
    return out


def chance_matrix(tickets: Sequence[Any]) -> torch.Tensor:
    """The chance Jaccard of every pair of tickets at their per-layer densities (1 on the diagonal),
    the reference :func:`plot_overlap_heatmap` colours the overlap against."""
    masks = [masks_of(t) for t in tickets]
    n = len(masks)
    out = torch.ones(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = mask_overlap(masks[i], masks[j]).chance
    return out


def plot_overlap_heatmap(matrix: torch.Tensor, labels: Sequence[str], path, *, title: str | None = None,
                         chance: torch.Tensor | None = None):
    """Heatmap of :func:`overlap_matrix` with the values written in the cells (up to 24 tickets).

    With ``chance`` (the matrix of chance overlaps at the same per-layer densities,
    :func:`chance_matrix`) the colour is the ratio Jaccard / chance on a log scale centred on 1
    (white: no more overlap than two random masks; red: more; blue: less) and every cell reads
    "Jaccard / chance": a raw 0.35 means little next to a chance of 0.33. Without it, the colour is
    the raw Jaccard.
    """
    from matplotlib.colors import LogNorm

    from torch_slt.experiment.plots import _figure, _save

    n = len(labels)
    if tuple(matrix.shape) != (n, n):
        raise AnalysisInputError(f"plot_overlap_heatmap(): a {tuple(matrix.shape)} matrix for {n} labels")
    if chance is not None and tuple(chance.shape) != (n, n):
        raise AnalysisInputError(f"plot_overlap_heatmap(): a {tuple(chance.shape)} chance matrix for {n} labels")
    cell = 0.62 if chance is not None else 0.45
    fig = _figure(max(5.0, cell * n + 3.0), max(4.2, cell * n + 2.0))
    ax = fig.add_subplot()
    if chance is None:
        image = ax.imshow(matrix.numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
        colour_label = "Jaccard overlap of kept weights"
    else:
        ratio = (matrix / chance.clamp_min(1e-12)).clamp(1 / 8, 8).numpy().copy()
        for i in range(n):
            ratio[i, i] = float("nan")  # a ticket with itself: 1 by definition, not a finding
        from matplotlib import colormaps

        image = ax.imshow(ratio, norm=LogNorm(vmin=1 / 8, vmax=8),
                          cmap=colormaps["RdBu_r"].with_extremes(bad="#d9d9d9"))
        colour_label = "Jaccard / chance (1: no more than random masks)"
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_yticklabels(labels, fontsize=7)
    if n <= 24:
        for i in range(n):
            for j in range(n):
                v = float(matrix[i, j])
                if chance is None:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if v > 0.6 else "white")
                    continue
                c = float(chance[i, j])
                strong = i != j and not 1 / 3 < v / max(c, 1e-12) < 3
                ax.text(j, i, "1" if i == j else f"{v:.2f}\n/{c:.2f}", ha="center", va="center",
                        fontsize=6 if n <= 12 else 5, color="white" if strong else "black")
    bar = fig.colorbar(image, ax=ax, label=colour_label)
    if chance is not None:
        ticks = [1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8]
        bar.set_ticks(ticks, labels=["1/8", "1/4", "1/2", "1", "2", "4", "8"])
        bar.minorticks_off()
    ax.set_title(title or ("Mask overlap: Jaccard / chance at the same per-layer densities" if chance is not None
                           else "Mask overlap"), fontsize=10)
    return _save(fig, path)
