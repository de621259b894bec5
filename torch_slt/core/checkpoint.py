"""Checkpoints of gated models: load them into a fresh, ungated model; save and load files safely.

A gated model's ``state_dict()`` holds ``<m>.weight_orig``, ``<m>.weight_mask`` and the method's learned
tensors (``<m>.weight_mu`` for ``stg``) instead of ``<m>.weight``, so a fresh model cannot load it
(pain point 2). :func:`load_state_dict` re-creates the gates from the saved keys first, then loads.

**Which method and hyperparameters?** Every gated module adds one entry to the state_dict's standard
per-module metadata (``state_dict._metadata[<m>]["torch_slt"] = {"weight": {"method": "stg",
"config": {"lam": 0.1, "sigma": 0.5, ...}}}``), written by a ``state_dict`` post-hook that the gate
installs. ``_metadata`` is part of every ``state_dict()`` and survives ``torch.save`` /
``torch.load(weights_only=True)``; safetensors files keep it in their header when written with
:func:`save_file`. The config holds the method's constructor arguments that are plain JSON values (data
batches and callables are left out: they are only needed to *choose* a fixed mask, which the checkpoint
already holds). When the metadata is missing (a state_dict rebuilt key by key, a file written by
another tool), pass ``method=`` and the hyperparameters yourself.

No pickle from a file is executed: :func:`load_file` uses ``safetensors`` or
``torch.load(weights_only=True)``.

Example:
    >>> import io, torch, torch_slt
    >>> make = lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> gated = torch_slt.apply(make(), "stg", lam=0.2)
    >>> buf = io.BytesIO(); torch.save(gated.state_dict(), buf); _ = buf.seek(0)
    >>> fresh = make()
    >>> result = torch_slt.load_state_dict(fresh, torch.load(buf, weights_only=True))
    >>> result.missing_keys, result.unexpected_keys, torch_slt.is_gated(fresh)
    ([], [], True)
"""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from torch_slt.core import api
from torch_slt.core.base import FixedMaskMethod, SLTMethod, pruning_hook
from torch_slt.core.errors import NotGatedError
from torch_slt.core.gated import HISTORY_ATTR
from torch_slt.core.metadata import METADATA_KEY, refuse_other_method, saved_gates
from torch_slt.core.registry import get_method

# ------------------------------------------------------------------------------------------ loading
def load_state_dict(model: nn.Module, state_dict: Mapping[str, Any], strict: bool = True, *,
                    method: str | None = None, freeze: bool | None = None, **method_kwargs: Any):
    """Load a checkpoint saved from a gated model into ``model``, gating it first where needed.

    Modules whose tensors are gated in ``state_dict`` but not in ``model`` are gated with the method
    and hyperparameters recorded in the checkpoint's metadata (or ``method=`` and ``**method_kwargs``,
    which override it), then everything is loaded with ``model.load_state_dict(state_dict, strict)``.
    Fixed masks are taken from the checkpoint as they are, so data-scored methods (SNIP, ...) need no
    data here. A model that is already gated the same way is simply loaded.

    Args:
        model: the model to load into, gated or not (not a DDP/FSDP wrapper: pass ``ddp.module``).
        state_dict: e.g. ``torch.load(path, weights_only=True)`` or :func:`load_file`.
        strict: passed to ``nn.Module.load_state_dict``.
        method: the method name, required when the checkpoint carries no torch_slt metadata.
        freeze: as in :func:`torch_slt.apply` (default: True for learned-mask methods).
        **method_kwargs: hyperparameters for ``method`` (override the recorded ones).

    Returns:
        The ``NamedTuple(missing_keys, unexpected_keys)`` of ``nn.Module.load_state_dict``.

    Raises:
        NotGatedError: ``state_dict`` has no gated tensor and ``method`` was given (nothing to gate).
        ValueError: the method of a gated tensor is unknown; the message says to pass ``method=``; or
            a tensor's shape differs from the model's (nothing gated or loaded then).
        MethodMismatchError: a tensor the model already gates was saved from another method.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_state_dict(): model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        raise TypeError("load_state_dict(): pass the wrapped model (ddp.module), not the DDP wrapper")
    gates = saved_gates(state_dict)
    if not gates and method is not None:
        raise NotGatedError(
            f"load_state_dict(): method={method!r} given but the state_dict has no gated tensor "
            f"(no '<module>.weight_orig' with '<module>.weight_mask'); use model.load_state_dict()"
        )
    groups: dict[str, tuple[type, dict[str, Any], list[str]]] = {}
    modules = dict(model.named_modules())
    for module_name, tensors in gates.items():
        for tensor, info in tensors.items():
            module = modules.get(module_name)
            if module is None:
                continue                               # left for strict loading to report
            existing = pruning_hook(module, tensor)
            if existing is not None:                   # already gated: the load fills it, if it fits
                if isinstance(existing, SLTMethod):
                    refuse_other_method(info, existing, _key(module_name, tensor), "load_state_dict()")
                    if method is not None and get_method(method) is not type(existing):
                        refuse_other_method({"method": get_method(method).name}, existing,
                                            _key(module_name, tensor), "load_state_dict()")
                continue
            if method is None and info is None:
                raise ValueError(
                    f"load_state_dict(): {module_name}.{tensor} is gated in the checkpoint but its method "
                    f"is not recorded (the state_dict lost its torch_slt metadata). Pass the method and "
                    f"its hyperparameters: torch_slt.load_state_dict(model, sd, method='stg', lam=0.1)"
                )
            name = method if method is not None else info["method"]
            config = dict(info["config"]) if info is not None and (method is None
                                                                  or get_method(method).name
                                                                  == info["method"]) else {}
            config.update(method_kwargs)
            cls = get_method(name)
            key = json.dumps([cls.name, config], sort_keys=True, default=str)
            groups.setdefault(key, (cls, config, []))[2].append((module_name, tensor))

    _refuse_shape_mismatch(model, state_dict, {(n, t) for _, _, names in groups.values() for n, t in names})
    undo = _Rollback(model)
    try:
        for cls, config, names in groups.values():
            wanted = set(names)
            selector = lambda n, p, m, wanted=wanted: (n, p) in wanted  # noqa: E731
            if issubclass(cls, FixedMaskMethod):
                masks = {(n, t): state_dict[_key(n, t) + "_mask"] for n, t in names}
                api._apply_with(model, cls, selector, freeze=bool(freeze),
                                install=lambda target, cls=cls, config=config, masks=masks:
                                _restore_fixed(cls, config, target, masks[(target.name, target.tensor)]))
            else:
                api.apply(model, cls, targets=selector, freeze=freeze, **config)
        if strict:
            _refuse_key_mismatch(model, state_dict)
        return model.load_state_dict(state_dict, strict=strict)
    except BaseException:
        undo()
        raise


class _Rollback:
    """Takes off the gates :func:`load_state_dict` added, and restores the ``requires_grad`` flags and
    their records, when the load then fails: the model is left as it was given."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.gated = {(id(m), h._tensor_name) for _, m, h in api.gated_tensors(model)}
        self.flags = [(p, p.requires_grad) for p in model.parameters()]
        self.records = [(m, dict(m.__dict__[api._FROZEN_ATTR]) if api._FROZEN_ATTR in m.__dict__ else None)
                        for m in model.modules()]
        self.history = dict(model.__dict__.get(HISTORY_ATTR) or {})
        self.had_history = HISTORY_ATTR in model.__dict__

    def __call__(self) -> None:
        for _, module, hook in list(api.gated_tensors(self.model)):
            if (id(module), hook._tensor_name) not in self.gated:
                hook._undo(module, module._parameters[hook._tensor_name + "_orig"])
        for module, record in self.records:
            if record is None:
                module.__dict__.pop(api._FROZEN_ATTR, None)
            else:
                module.__dict__[api._FROZEN_ATTR] = record
        for param, flag in self.flags:
            param.requires_grad_(flag)
        if self.had_history:
            self.model.__dict__[HISTORY_ATTR] = self.history
        else:
            self.model.__dict__.pop(HISTORY_ATTR, None)


def _refuse_key_mismatch(model: nn.Module, state_dict: Mapping[str, Any]) -> None:
    """torch's strict load copies every matching tensor before it reports missing or unexpected keys;
    check them first, so that a refused checkpoint changes nothing."""
    expected, given = set(model.state_dict().keys()), set(state_dict.keys())
    # BatchNorm fills a num_batches_tracked missing from checkpoints older than its counter.
    missing = sorted(k for k in expected - given if not k.endswith("num_batches_tracked"))
    unexpected = sorted(given - expected)
    if missing or unexpected:
        parts = [f"{label} {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise RuntimeError(
            f"load_state_dict(): the checkpoint does not fit the model ({'; '.join(parts)}). Check that it "
            f"was saved from this architecture, or pass strict=False; nothing was gated or loaded.")


def _refuse_shape_mismatch(model: nn.Module, state_dict: Mapping[str, Any],
                           to_gate: set[tuple[str, str]]) -> None:
    """Compare every tensor of ``state_dict`` with the model's, before anything is gated or loaded.

    torch reports a size mismatch only after loading every other tensor, and by then the gates this
    function added are on the model: a checkpoint of a wider model would leave a narrower one gated and
    half loaded. ``<m>.<t>_orig`` of a tensor about to be gated is compared with ``<m>.<t>``.
    """
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    renamed = {_key(n, t) + "_orig": _key(n, t) for n, t in to_gate}
    wrong = []
    for key, value in state_dict.items():
        mine = own.get(renamed.get(key, key))
        if isinstance(value, Tensor) and mine is not None and tuple(value.shape) != tuple(mine.shape):
            wrong.append(f"{key}: checkpoint {tuple(value.shape)}, model {tuple(mine.shape)}")
    if wrong:
        shown = "; ".join(wrong[:6]) + (f"; and {len(wrong) - 6} more" if len(wrong) > 6 else "")
        raise ValueError(
            f"load_state_dict(): the checkpoint was saved from a model of another size ({shown}). Build the "
            f"model with the checkpoint's sizes; nothing was gated or loaded.")


def _restore_fixed(cls: type, config: dict[str, Any], target: Any, mask: Tensor) -> Any:
    """Install a fixed-mask gate from a saved mask, without the data its scores would need."""
    hook = cls.for_saved_mask(config)
    device = target.module._parameters[target.tensor].device
    return hook._install(target.module, target.tensor, mask=mask.to(device=device, dtype=torch.bool))


def _key(module_name: str, tensor: str) -> str:
    return f"{module_name}.{tensor}" if module_name else tensor


# ------------------------------------------------------------------------------------------ files
def save_file(model_or_state_dict: nn.Module | Mapping[str, Tensor], path: str | os.PathLike) -> None:
    """Save a (gated) state_dict with its torch_slt metadata.

    ``.safetensors`` files keep the metadata in their JSON header; any other suffix uses
    ``torch.save``. Read it back with :func:`load_file`.
    """
    state_dict = (model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module)
                  else model_or_state_dict)
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file as _save

        tensors, seen = {}, {}
        for key, value in state_dict.items():
            tensor = value.detach()
            ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape)
            # Tied tensors share storage; safetensors refuses that, so the second copy is cloned.
            tensors[key] = tensor.clone() if ident in seen else tensor.contiguous()
            seen[ident] = key
        metadata = getattr(state_dict, "_metadata", None) or {}
        header = {"format": "pt", METADATA_KEY: json.dumps(metadata, default=str)}
        _save(tensors, path, metadata=header)
    else:
        torch.save(state_dict, path)


def load_file(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
              device: str | torch.device | None = None) -> OrderedDict:
    """Read a file written by :func:`save_file` (or any ``torch.save``d state_dict) without unpickling
    code: safetensors for ``.safetensors``, ``torch.load(weights_only=True)`` otherwise.

    ``map_location`` is the device the tensors are loaded onto, torch.load's keyword (as in
    :func:`torch_slt.load_ticket`); ``device=`` is its old name and warns.
    """
    if device is not None:
        warnings.warn("load_file(device=...) is now load_file(map_location=...), torch.load's keyword; "
                      "device= goes away in the release after 0.2", FutureWarning, stacklevel=2)
        map_location = device
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(f"load_file(): map_location must be a device name or torch.device (e.g. 'cpu', "
                        f"'cuda:0'), got {type(map_location).__name__}")
    device = map_location
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        state_dict: OrderedDict = OrderedDict()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load_file(): no such file: {path}")
        try:
            with safe_open(path, framework="pt", device=str(device)) as f:
                header = f.metadata() or {}
                for key in f.keys():
                    state_dict[key] = f.get_tensor(key)
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            first = (str(err).splitlines() or [""])[0]
            raise ValueError(f"load_file(): {path} is not a readable safetensors file ({type(err).__name__}: "
                             f"{first}); it is empty, truncated or damaged") from None
        metadata = _header_metadata(path, header.get(METADATA_KEY))
        if metadata is not None:
            state_dict._metadata = metadata
        return state_dict
    return torch.load(path, map_location=device, weights_only=True)


def _header_metadata(path: str, text: str | None) -> dict[str, Any] | None:
    """The gate metadata :func:`save_file` put under the header key ``torch_slt``, or None.

    Files written by earlier versions of the ``torch-slt`` command line hold the library *version* under that
    key (``"0.1.0"``): a plain string, not metadata, so it is skipped (the file is a finalized,
    ungated state_dict). A value that starts as JSON but does not parse is a damaged header."""
    if text is None:
        return None
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        metadata = json.loads(stripped)
    except ValueError as err:
        raise ValueError(f"load_file(): {path}: the header's {METADATA_KEY!r} entry is not valid JSON "
                         f"({err}); the file is damaged. torch_slt.load_file reads what torch_slt.save_file "
                         f"wrote; safetensors.torch.load_file reads the tensors alone.") from None
    return metadata if isinstance(metadata, dict) else None
