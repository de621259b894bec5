"""What :func:`compact` and :func:`to_sparse` return: the module, with the report as an attribute.

The library's rule (docs/api.md, "Conventions"): a function that changes a model returns the model
(``apply``, ``finalize``, ``to_sparse``, as torch's in-place functions do) and one that makes a smaller
copy returns the copy (``compact``); a report rides along as a plain attribute of the returned module
(``small.compact_report``, ``model.sparse_export_report``), which is not in the state_dict.

Until 0.2 both returned ``(model, report)``; that shape is kept for one release when ``return_report``
is not given, with a ``FutureWarning``. ``return_report=False`` is the new behaviour, ``True`` keeps the
pair without a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn


def check_return_report(return_report: Any, who: str) -> None:
    """Refuse a non-bool ``return_report`` before the model is touched."""
    if return_report is not None and not isinstance(return_report, bool):
        raise TypeError(f"{who}: return_report must be True, False or None, got {return_report!r}")


def returned(module: nn.Module, report: Any, attribute: str, return_report: bool | None,
             who: str) -> nn.Module | tuple[nn.Module, Any]:
    """Attach ``report`` to ``module`` as ``attribute``; return the module (or the old pair)."""
    module.__dict__[attribute] = report  # a plain attribute: never a submodule, never in the state_dict
    if return_report is None:
        warnings.warn(f"{who} returns (model, report) for one more release, then only the model; pass "
                      f"return_report=False to get the model now (the report is model.{attribute}), or "
                      f"return_report=True to keep the pair", FutureWarning, stacklevel=3)
        return module, report
    return (module, report) if return_report else module
