"""Readers of gated weights: checks and refresh hooks :func:`torch_slt.apply` installs before the model is touched.

A torch pruning hook recomputes ``module.weight`` only when *that module* is called. Two patterns read a
gated weight some other way, and would silently use a stale tensor (pain point 4 in the libraries notes):

* **Tied weights**: one Parameter owned by two modules (an embedding tied to an output projection, GPT-2's
  ``lm_head``/``wte``). Gating one owner leaves the other reading the ungated Parameter, and
  :func:`torch_slt.finalize` would then zero the shared tensor under both. :func:`check_targets` refuses
  them with a :class:`~torch_slt.core.errors.UnsupportedModelError` naming both owners and the fix.
* **Weights read by another module's forward**: ``nn.MultiheadAttention`` passes ``self.out_proj.weight``
  to ``F.multi_head_attention_forward`` without calling ``out_proj``; ``nn.TransformerEncoderLayer``'s
  inference fast path reads ``linear1.weight``, ``linear2.weight`` and ``self_attn.out_proj.weight``.
  :func:`check_targets` finds such readers (the reader's ``forward`` source mentions
  ``self.<path to target>.weight``) and :func:`install_readers` gives each reader a forward pre-hook
  that refreshes the target's weight first, so the gate changes the output and gets its gradient. Reads
  of metadata only (``.weight.dtype``, ``.shape``, ...) get a cheap hook that only refreshes a tensor
  whose dtype or device went stale after ``model.to(...)``.

The hooks belong to the gating method (their ``owner``): :func:`torch_slt.finalize` and a failed
``apply`` remove them with the gate.
"""

from __future__ import annotations

import functools
import inspect
import re
import textwrap
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torch_slt.core.base import detach_attribute
from torch_slt.core.errors import UnsupportedModelError

_READ = re.compile(r"self((?:\.\w+)+)\.(\w+)\b(\s*\.\s*(\w+))?")
_METADATA_ONLY = {"dtype", "device", "shape", "size", "ndim", "dim", "numel", "is_cuda"}


@dataclass(frozen=True)
class Reader:
    """``reader`` (named ``reader_name``) reads ``target.<tensor>`` in its own forward."""

    reader_name: str
    reader: nn.Module
    target: nn.Module
    metadata_only: bool
    tensor: str = "weight"


@functools.lru_cache(maxsize=512)
def _weight_reads(cls: type) -> tuple[tuple[str, str, bool], ...]:
    """``(relative module path, attribute, metadata only)`` for every ``self.<path>.<attribute>`` in
    ``cls.forward`` (``self.out_proj.weight``, ``self.self_attn.in_proj_weight``)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls.forward))
    except (OSError, TypeError):
        return ()
    reads: dict[tuple[str, str], bool] = {}
    for path, tensor, _, attribute in _READ.findall(source):
        meta = attribute in _METADATA_ONLY
        key = (path[1:], tensor)
        reads[key] = reads.get(key, True) and meta
    return tuple((path, tensor, meta) for (path, tensor), meta in reads.items())


def _owners(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """id(Parameter) -> every distinct ``(module name, module, attribute)`` that owns it."""
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for attr, param in module._parameters.items():
            if param is None:
                continue
            entries = owners.setdefault(id(param), [])
            if not any(m is module for _, m, _ in entries):
                entries.append((module_name, module, attr))
    return owners


def _qualified(module_name: str, attr: str) -> str:
    return f"{module_name}.{attr}" if module_name else attr


def check_targets(model: nn.Module, selected: list) -> list[Reader]:
    """Refuse tied target weights; return the modules that read a target's weight in their forward.

    Raises:
        UnsupportedModelError: a target's weight Parameter is also owned by another module.
    """
    owners = _owners(model)
    for target in selected:
        name, module = target[0], target[1]
        tensor = getattr(target, "tensor", "weight")
        shared = [o for o in owners.get(id(module._parameters[tensor]), []) if o[1] is not module]
        if shared:
            others = ", ".join(repr(_qualified(n, a)) for n, _, a in shared)
            raise UnsupportedModelError(
                f"apply(): {_qualified(name, tensor)!r} is tied to {others} (the same Parameter). Gating "
                f"one owner would leave the other reading the ungated tensor, and finalize() would zero "
                f"the shared tensor under both names. Leave it out with exclude=[{name!r}], or untie it "
                f"first: model.{name}.{tensor} = torch.nn.Parameter(model.{name}.{tensor}.detach().clone())."
            )
    by_tensor = {(id(t[1]), getattr(t, "tensor", "weight")) for t in selected}
    readers = []
    for reader_name, reader in model.named_modules():
        for path, tensor, meta in _weight_reads(type(reader)):
            try:
                target = reader.get_submodule(path)
            except AttributeError:
                continue
            key = (id(target), tensor)
            if key in by_tensor and target is not reader:
                readers.append(Reader(reader_name, reader, target, meta, tensor))
    return readers


class RefreshFromReader:
    """Forward pre-hook on a reader: recompute the target's gated weight before the reader runs.

    The weight is computed once per forward of the reader: while the reader runs, the gate's own
    pre-hook (the target called inside the reader, as ``TransformerEncoderLayer`` calls ``linear1`` in
    training) and nested readers (``MultiheadAttention`` inside ``TransformerEncoderLayer``) reuse it,
    so a training gate is sampled once per forward, not once per reader.
    """

    def __init__(self, owner: Any, target: nn.Module, metadata_only: bool) -> None:
        self.owner = owner          # the gating method; its _undo removes this hook
        self.target = target
        self.metadata_only = metadata_only

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        name = self.owner._tensor_name
        if self.metadata_only:
            current = self.target.__dict__.get(name)
            orig = self.target._parameters[name + "_orig"]
            if current is not None and current.dtype == orig.dtype and current.device == orig.device:
                return
            with torch.no_grad():
                self.owner(self.target, inputs)
            return
        if not self.owner._reader_depth:
            self.owner.refresh(self.target, inputs)
        self.owner._reader_depth += 1


class DetachAfterReader:
    """Forward hook on a reader (run even when the forward raises): end the reader's use of the weight
    and detach it once the outermost reader is done (deepcopy safety, as in base)."""

    def __init__(self, owner: Any, target: nn.Module) -> None:
        self.owner = owner
        self.target = target

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.owner._reader_depth = max(0, self.owner._reader_depth - 1)
        if not self.owner._reader_depth:
            detach_attribute(self.target, self.owner._tensor_name)


def install_readers(readers: list[Reader], hooks: dict[int, Any]) -> None:
    """Register the refresh hooks for ``readers``; ``hooks`` maps (id(module), tensor) -> its gate."""
    for r in readers:
        owner = hooks[(id(r.target), r.tensor)]
        r.reader.register_forward_pre_hook(RefreshFromReader(owner, r.target, r.metadata_only))
        if not r.metadata_only:
            r.reader.register_forward_hook(DetachAfterReader(owner, r.target), always_call=True)
        hooked = owner.__dict__.setdefault("_hooked_modules", [])
        if not any(m is r.reader for m in hooked):
            hooked.append(r.reader)
