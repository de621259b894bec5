"""Analysis of tickets themselves: mask overlap (Jaccard, against chance), per-layer sparsity profiles,
and the loss along a line between two tickets' effective weights. See ``docs/analysis.md``.

Example:
    >>> import torch, torch_slt
    >>> from torch_slt.analysis import mask_overlap
    >>> net = torch.nn.Linear(64, 64)
    >>> a = torch_slt.apply(net, "magnitude", sparsity=0.9)
    >>> mask_overlap(a, a).jaccard
    1.0
"""

from torch_slt.analysis.landscape import LineResult, barrier, effective_state, loss_along_line, plot_line
from torch_slt.analysis.masks import AnalysisInputError, load_model, masks_of
from torch_slt.analysis.overlap import (
                                        LayerOverlap,
                                        Overlap,
                                        chance_jaccard,
                                        chance_matrix,
                                        jaccard,
                                        mask_overlap,
                                        overlap_matrix,
                                        plot_overlap_heatmap,
)
from torch_slt.analysis.profiles import layer_profile, plot_layer_profiles

__all__ = ["AnalysisInputError", "LayerOverlap", "LineResult", "Overlap", "barrier", "chance_jaccard", "chance_matrix",
           "effective_state", "jaccard", "layer_profile", "load_model", "loss_along_line", "mask_overlap",
           "masks_of", "overlap_matrix", "plot_layer_profiles", "plot_line", "plot_overlap_heatmap"]
