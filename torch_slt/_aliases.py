"""Module paths that moved when the package was split into core / experiment / cli (issue 13).

``import torch_slt.train`` and ``from torch_slt.api import apply`` keep working: a meta-path finder
hands out the module at its new home under the old name. Deprecated paths warn once per module with a
``FutureWarning`` naming the new path, and go away in the release after 0.2; ``torch_slt.init`` is a
public namespace (like ``torch.nn.init``) and stays without a warning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old module path -> (new module path, deprecated?)
MOVED: dict[str, tuple[str, bool]] = {
    **{f"torch_slt.{name}": (f"torch_slt.core.{name}", True)
       for name in ("api", "base", "errors", "registry", "report", "selection", "targets")},
    "torch_slt.checks": ("torch_slt.core.readers", True),
    "torch_slt.checkpoint": ("torch_slt.core.checkpoint", True),
    # renamed to say what they hold (issue 18): readers of gated weights, checkpoint I/O
    "torch_slt.core.checks": ("torch_slt.core.readers", True),
    "torch_slt.core.state": ("torch_slt.core.checkpoint", True),
    "torch_slt._validation": ("torch_slt.core.validation", True),
    **{f"torch_slt.{name}": (f"torch_slt.experiment.{name}", True)
       for name in ("data", "plots", "ticket", "train", "zoo")},
    "torch_slt._resnet": ("torch_slt.experiment.resnet", True),
    "torch_slt.init": ("torch_slt.experiment.init", False),
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the module object at its new path (the same object)."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec) -> ModuleType:
        new, deprecated = MOVED[spec.name]
        if deprecated:
            warnings.warn(f"{spec.name} moved to {new}; import it from there (the old path goes away in the "
                          f"release after 0.2). Public names such as torch_slt.apply are unchanged.",
                          FutureWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (the module ran under its new name); undo importlib's ``__spec__`` rewrite."""
        for old, spec in list(self._specs.items()):
            if spec.name == module.__name__:
                module.__spec__ = self._specs.pop(old)


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (idempotent)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
