"""Tickets that run faster: physical removal of pruned channels (:func:`compact`) and a sparse export
(:func:`to_sparse`). Both work on a finalized model (``torch_slt.finalize``) and return standard
``nn.Module`` objects. ``compact`` needs the ``structured`` extra (torch-pruning)."""

from torch_slt.structured.compaction import CompactReport, compact
from torch_slt.structured.sparse_export import SparseExportReport, SparseLinear, to_sparse

__all__ = ["CompactReport", "SparseExportReport", "SparseLinear", "compact", "to_sparse"]
