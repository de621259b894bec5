"""What each gate records about itself in a ``state_dict``: its method and hyperparameters.

Every gated module adds one entry to the state_dict's standard per-module metadata
(``state_dict._metadata[<m>]["torch_slt"] = {"weight": {"method": "stg", "config": {...}}}``), written by
the :class:`GateMetadata` post-hook that the gate installs. :mod:`torch_slt.core.checkpoint` reads it back to
re-create the gates of a checkpoint. This module imports nothing else of the core, so the gate protocol
(:mod:`torch_slt.core.base`) can install the hook without an import circle.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

METADATA_KEY = "torch_slt"
_JSON_SCALARS = (type(None), bool, int, float, str)


def method_config(hook: Any) -> dict[str, Any]:
    """The constructor arguments of ``hook`` that are public attributes holding plain JSON values."""
    config = {}
    for pname, param in inspect.signature(type(hook).__init__).parameters.items():
        if pname == "self" or pname.startswith("_") or param.kind in (param.VAR_POSITIONAL,
                                                                        param.VAR_KEYWORD):
            continue
        if not hasattr(hook, pname):
            continue
        value = getattr(hook, pname)
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, _JSON_SCALARS) or (isinstance(value, list)
                                                and all(isinstance(v, _JSON_SCALARS) for v in value)):
            config[pname] = value
    return config


def describe(hook: Any) -> dict[str, Any]:
    """``{"method": name, "config": {...}}`` for one gate."""
    return {"method": type(hook).name or type(hook).__name__, "config": method_config(hook)}


class GateMetadata:
    """``state_dict`` post-hook installed with every gate: records its method in ``_metadata``."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner          # the gating method; its _undo removes this hook

    def __call__(self, module: nn.Module, state_dict: Any, prefix: str, local_metadata: dict) -> None:
        local_metadata.setdefault(METADATA_KEY, {})[self.owner._tensor_name] = describe(self.owner)


def saved_gates(state_dict: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{module name: {"weight": description or None}}`` for every gated tensor in ``state_dict``.

    A tensor counts as gated when both ``<m>.<t>_orig`` and ``<m>.<t>_mask`` are present; its
    description comes from the metadata (``None`` when absent).
    """
    metadata = getattr(state_dict, "_metadata", None) or {}
    found: dict[str, dict[str, Any]] = {}
    for key in state_dict:
        if not key.endswith("_orig"):
            continue
        stem = key[: -len("_orig")]
        if stem + "_mask" not in state_dict:
            continue
        module_name, _, tensor = stem.rpartition(".")
        info = (metadata.get(module_name) or {}).get(METADATA_KEY, {}).get(tensor)
        found.setdefault(module_name, {})[tensor] = info
    return found


class GateLoadCheck:
    """``load_state_dict`` pre-hook installed with every gate: refuses a checkpoint whose metadata says
    this tensor was gated by another method (torch would load ``edgepopup``'s scores into ``supermask``
    saying "All keys matched"). Runs inside torch's own ``nn.Module.load_state_dict`` too."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner          # the gating method; its _undo removes this hook

    def __call__(self, module: nn.Module, state_dict: Any, prefix: str, local_metadata: dict,
                 *args: Any) -> None:
        saved = (local_metadata.get(METADATA_KEY) or {}).get(self.owner._tensor_name)
        refuse_other_method(saved, self.owner, prefix + self.owner._tensor_name, "load_state_dict()")


def refuse_other_method(saved: Any, hook: Any, qualified: str, who: str) -> None:
    """Raise :class:`~torch_slt.core.errors.MethodMismatchError` when the description ``saved`` (from a
    checkpoint's metadata) names another method than the gate ``hook``."""
    if not isinstance(saved, Mapping) or "method" not in saved:
        return
    mine = describe(hook)["method"]
    if saved["method"] != mine:
        from torch_slt.core.errors import MethodMismatchError

        raise MethodMismatchError(
            f"{who}: {qualified} was saved from a {saved['method']!r} gate, but the model gates it with "
            f"{mine!r}; the tensors would load (the keys may even match) but mean something else. Load it "
            f"into an ungated model with torch_slt.load_state_dict(model, state_dict), which re-creates "
            f"the {saved['method']!r} gates, or gate the model with {saved['method']!r} first. Nothing was "
            f"loaded into this module.")
