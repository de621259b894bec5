"""torch_slt: find strong lottery tickets (sparse subnetworks of frozen random weights) in any PyTorch model.

The names here are the public API. The gating core (``torch_slt.core``, ``torch_slt.methods``) is
imported eagerly and needs only torch; names that live in the experiment layer (tickets, the model
zoo's initialisations) are imported on first use, so ``import torch_slt`` stays cheap.
See ``docs/architecture.md`` for the layers.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch_slt import _aliases, methods  # noqa: F401  (methods registers the built-in methods)
from torch_slt.core.api import (apply, finalize, gated_tensors, is_gated, mask_parameters,
                                named_mask_parameters, penalty)
from torch_slt.core.batchnorm import recalibrate_batchnorm
from torch_slt.core.base import FixedMaskMethod, LearnedMaskMethod, SLTMethod
from torch_slt.core.gated import GatedTensor
from torch_slt.core.errors import (AlreadyGatedError, DatasetFormatError, DatasetNotFoundError,
                                   MethodMismatchError, NonFiniteError, NonFiniteGateError, NoTargetsError,
                                   NotGatedError, SettingError, SLTError, TicketFormatError,
                                   TicketMismatchError, UnknownDatasetError, UnknownMethodError,
                                   UnknownModelError, UnsupportedModelError)
from torch_slt.core.granularity import GranularityError
from torch_slt.core.masks import MaskError
from torch_slt.core.registry import get_method, list_methods, register_method
from torch_slt.core.report import LayerSparsity, SparsityReport, report
from torch_slt.core.checkpoint import load_file, load_state_dict, save_file

__version__ = "0.1.0"

_aliases.install()

#: Public names imported on first access: name -> (module, attribute; None for the module itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    "init": ("torch_slt.experiment.init", None),
    "load_ticket": ("torch_slt.experiment.ticket", "load_ticket"),
    "save_ticket": ("torch_slt.experiment.ticket", "save_ticket"),
    "compact": ("torch_slt.structured.compaction", "compact"),
    "to_sparse": ("torch_slt.structured.sparse_export", "to_sparse"),
    "evaluate": ("torch_slt.evaluation", "evaluate"),
    # Error classes that live with their subsystem; every one is an SLTError.
    "AnalysisInputError": ("torch_slt.analysis.masks", "AnalysisInputError"),
    "CompactError": ("torch_slt.structured.compaction", "CompactError"),
    "ControlError": ("torch_slt.lottery.controls", "ControlError"),
    "EvaluationInputError": ("torch_slt.evaluation.context", "EvaluationInputError"),
    "RunFolderError": ("torch_slt.lottery.folder", "RunFolderError"),
    "SparseExportError": ("torch_slt.structured.sparse_export", "SparseExportError"),
    "UnknownMetricError": ("torch_slt.evaluation.registry", "UnknownMetricError"),
}

#: Subpackages reachable as attributes (``torch_slt.lottery.imp``) without importing them first.
SUBPACKAGES = ("analysis", "cli", "core", "evaluation", "experiment", "integrations", "lottery",
               "methods", "prune", "structured")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
        globals()[name] = value
        return value
    if name in SUBPACKAGES:
        return importlib.import_module(f"torch_slt.{name}")
    raise AttributeError(f"module 'torch_slt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(SUBPACKAGES))


#: Every error class the library raises on purpose (all subclass SLTError); listed in docs/api.md.
ERRORS = (
    "AlreadyGatedError", "AnalysisInputError", "CompactError", "ControlError", "DatasetFormatError",
    "DatasetNotFoundError", "EvaluationInputError", "GranularityError", "MaskError", "MethodMismatchError",
    "NoTargetsError", "NonFiniteError", "NonFiniteGateError", "NotGatedError", "RunFolderError", "SLTError",
    "SettingError", "SparseExportError", "TicketFormatError", "TicketMismatchError", "UnknownDatasetError",
    "UnknownMethodError", "UnknownMetricError", "UnknownModelError", "UnsupportedModelError",
)

__all__ = [
    *ERRORS, "FixedMaskMethod", "GatedTensor", "LayerSparsity", "LearnedMaskMethod", "SLTMethod", "SparsityReport",
    "apply", "finalize", "gated_tensors", "get_method", "is_gated", "list_methods", "mask_parameters",
    "named_mask_parameters", "penalty", "recalibrate_batchnorm", "register_method", "report", "__version__",
    "load_file", "load_state_dict", "save_file",
    "init", "load_ticket", "save_ticket", "compact", "to_sparse", "evaluate",
]
