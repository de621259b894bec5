"""torch_slt: find strong lottery tickets (sparse subnetworks of frozen random weights) in any PyTorch model."""

from torch_slt import init, methods  # noqa: F401  (methods registers the built-in methods)
from torch_slt.api import (apply, finalize, gated_tensors, is_gated, mask_parameters,
                           named_mask_parameters, penalty)
from torch_slt.base import FixedMaskMethod, LearnedMaskMethod, SLTMethod
from torch_slt.checkpoint import load_file, load_state_dict, save_file
from torch_slt.errors import (AlreadyGatedError, NoTargetsError, NotGatedError, SLTError,
                              UnknownMethodError, UnsupportedModelError)
from torch_slt.registry import get_method, list_methods, register_method
from torch_slt.report import LayerSparsity, SparsityReport, report
from torch_slt.ticket import load_ticket, save_ticket

__version__ = "0.1.0"

__all__ = [
    "AlreadyGatedError", "FixedMaskMethod", "LayerSparsity", "LearnedMaskMethod", "NoTargetsError",
    "NotGatedError", "SLTError", "SLTMethod", "SparsityReport", "UnknownMethodError", "apply",
    "finalize", "gated_tensors", "get_method", "is_gated", "list_methods", "mask_parameters",
    "named_mask_parameters", "penalty", "register_method", "report", "__version__",
    "UnsupportedModelError", "load_file", "load_state_dict", "save_file",
    "init", "load_ticket", "save_ticket",
]
