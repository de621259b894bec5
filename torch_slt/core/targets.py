"""Which tensors get gated: default layer types, module or parameter names, or a callable.

A target is one Parameter of one module (:class:`Target`): ``Linear.weight`` by default, but any
parameter name works, because torch's pruning protocol (``weight_orig`` + pre-hook) works on any name.

Defaults (``targets=None``):

* ``weight`` of ``nn.Linear``, ``nn.Conv1d/2d/3d`` and transformers' ``Conv1D``;
* ``in_proj_weight`` of ``nn.MultiheadAttention`` (``q/k/v_proj_weight`` when the key/value
  dimensions differ): torchvision's ViT projects q, k and v through it, a third of each block;
* the recurrent weights (``weight_ih_l*``, ``weight_hh_l*``, ``weight_hr_l*``) of ``nn.RNN``,
  ``nn.LSTM`` and ``nn.GRU``.

Embeddings (and anything else that owns a ``weight``) are gated when named. Tensors with no weight at
all (``nn.Linear(4, 0)``) are left out.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from typing import Callable, Iterable, Union

from torch import Tensor, nn

from torch_slt.core.errors import NoTargetsError, UnsupportedModelError
from torch_slt.core.parametrized import parametrization_of, refusal

Selector = Union[str, Iterable[str], Callable[..., bool], None]

DEFAULT_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_GLOB = re.compile(r"[*?\[]")


class Target(tuple):
    """``(module name, module)`` plus ``.tensor``, the gated parameter's name (``"weight"`` mostly).

    A 2-tuple so that methods written for ``for name, module in targets`` keep working; use
    :func:`target_tensor` for the Parameter itself.
    """

    tensor: str

    def __new__(cls, name: str, module: nn.Module, tensor: str = "weight") -> Target:
        self = super().__new__(cls, (name, module))
        self.tensor = tensor
        return self

    @property
    def name(self) -> str:
        return self[0]

    @property
    def module(self) -> nn.Module:
        return self[1]

    @property
    def qualified(self) -> str:
        """``"<module name>.<tensor>"``, the key the tensor has in the finalized state_dict."""
        return f"{self[0]}.{self.tensor}" if self[0] else self.tensor

    def __repr__(self) -> str:
        return f"Target({self.qualified!r})"

    # Two tensors of one module are two targets (a tuple alone would compare them equal).
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Target):
            return self[1] is other[1] and self[0] == other[0] and self.tensor == other.tensor
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self[0], id(self[1]), self.tensor))


def target_tensor(target: tuple) -> Tensor:
    """The (current) tensor a target gates: ``module.<tensor>`` (``weight`` for a plain 2-tuple)."""
    return getattr(target[1], getattr(target, "tensor", "weight"))


def is_default_target(module: nn.Module) -> bool:
    """``nn.Linear``, ``nn.Conv1d/2d/3d`` and transformers' ``Conv1D`` (GPT-2 style, transposed)."""
    if isinstance(module, DEFAULT_LAYER_TYPES):
        return True
    # Matched by name so that transformers stays an optional dependency.
    return any(c.__name__ == "Conv1D" and c.__module__.startswith("transformers")
               for c in type(module).__mro__)


def _has_param(module: nn.Module, name: str) -> bool:
    """Whether ``module`` owns the Parameter ``name`` (or had it, now gated as ``<name>_orig``)."""
    return isinstance(module._parameters.get(name), nn.Parameter) or name + "_orig" in module._parameters


def has_weight(module: nn.Module) -> bool:
    """Whether ``module`` owns a ``weight`` Parameter (or had one, now gated as ``weight_orig``)."""
    return _has_param(module, "weight")


def default_tensors(module: nn.Module) -> list[str]:
    """The tensors gated when ``module`` is selected by name: ``weight``, MHA's input projection,
    an RNN's recurrent weights; ``[]`` for a module with none of them."""
    # A weight computed by a parametrization is a candidate too, so that it is refused by name
    # (select_targets) rather than skipped in silence.
    if has_weight(module) or parametrization_of(module) is not None:
        return ["weight"]
    if isinstance(module, nn.MultiheadAttention):
        names = ["in_proj_weight"] if module._qkv_same_embed_dim else [
            "q_proj_weight", "k_proj_weight", "v_proj_weight"]
        return [n for n in names if _has_param(module, n)]
    if isinstance(module, nn.RNNBase):
        # Biases stay ungated, as for every other layer.
        return [n for n in module._flat_weights_names if n.startswith("weight_") and _has_param(module, n)]
    return []


def _is_default_module(module: nn.Module) -> bool:
    return is_default_target(module) or isinstance(module, (nn.MultiheadAttention, nn.RNNBase))


def gateable_tensors(module: nn.Module) -> list[str]:
    """Every floating-point Parameter name of ``module`` itself (gated ones under their own name)."""
    names = []
    for key, param in module._parameters.items():
        if param is None:
            continue
        if key.endswith("_orig") and key[:-5] + "_mask" in module._buffers:
            names.append(key[:-5])
        elif param.is_floating_point() and not _is_gate_field(module, key):
            names.append(key)
    return names


def _is_gate_field(module: nn.Module, key: str) -> bool:
    """``weight_mu`` and the like: a learned tensor of a gate on another tensor of this module."""
    stem = key.rpartition("_")[0]
    return bool(stem) and stem + "_orig" in module._parameters


def _name_matches(pattern: str, name: str) -> bool:
    if name == pattern or name.endswith("." + pattern):
        return True
    if _GLOB.search(pattern) and fnmatch.fnmatchcase(name, pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def _takes_param_name(selector: Callable[..., bool]) -> bool:
    """Whether a callable selector has the 3-argument form ``(module_name, param_name, module)``."""
    try:
        params = inspect.signature(selector).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    # Count the arguments without defaults, so that ``lambda name, module, cache=cache: ...`` stays 2-form.
    required = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is p.empty]
    return len(required) >= 3


def _tensors_matched(selector: Selector, name: str, module: nn.Module) -> list[str]:
    """The tensors of ``module`` that ``selector`` picks: by module (its default tensors) or by
    parameter (``"<module>.<param>"`` names, or a 3-argument callable)."""
    if callable(selector):
        if _takes_param_name(selector):
            return [t for t in gateable_tensors(module) if selector(name, t, module)]
        # Only modules with something to gate are shown, so a callable never sees the rest.
        tensors = default_tensors(module)
        return tensors if tensors and selector(name, module) else []
    patterns = [selector] if isinstance(selector, str) else list(selector)
    if any(_name_matches(p, name) for p in patterns):
        return default_tensors(module)
    picked = []
    for tensor in gateable_tensors(module):
        qualified = f"{name}.{tensor}" if name else tensor
        if any(_name_matches(p, qualified) for p in patterns):
            picked.append(tensor)
    return picked


def _check_selector(selector: Selector, arg: str) -> None:
    if selector is None or callable(selector) or isinstance(selector, str):
        return
    try:
        items = list(selector)
    except TypeError:
        raise TypeError(
            f"apply(): {arg} must be a module or parameter name, a list of names or a callable "
            f"(module_name, module) or (module_name, param_name, module) -> bool, "
            f"got {type(selector).__name__}"
        ) from None
    if not all(isinstance(p, str) for p in items):
        raise TypeError(f"apply(): every entry of {arg} must be a str, got {items!r}")


def select_targets(model: nn.Module, targets: Selector = None, exclude: Selector = None) -> list[Target]:
    """The tensors to gate, in ``named_modules`` order, each once (see the module docstring).

    ``targets`` and ``exclude`` take module names (a module's default tensors: ``weight``, MHA's
    ``in_proj_weight``, an RNN's weights), parameter names (``"encoder.0.self_attn.in_proj_weight"``,
    ``"*.in_proj_weight"``, ``"rnn.weight_ih_l0"``), each exact, as a dotted suffix, a glob or a full
    regex, or a callable ``(module_name, module) -> bool`` or ``(module_name, param_name, module) -> bool``.
    """
    _check_selector(targets, "targets")
    _check_selector(exclude, "exclude")
    if isinstance(targets, (list, tuple, set)):
        targets = list(targets)
    if isinstance(exclude, (list, tuple, set)):
        exclude = list(exclude)
    selected = []
    for name, module in model.named_modules():
        if targets is None:
            tensors = default_tensors(module) if _is_default_module(module) else []
        else:
            tensors = _tensors_matched(targets, name, module)
        if tensors and exclude is not None:
            dropped = set(_tensors_matched(exclude, name, module))
            tensors = [t for t in tensors if t not in dropped]
        selected.extend(Target(name, module, t) for t in tensors)
    if not selected:
        raise NoTargetsError(_no_match_message(model, targets, exclude))
    selected = _drop_empty(selected)
    for target in selected:
        found = parametrization_of(target.module, target.tensor)
        if found is not None:
            raise UnsupportedModelError(refusal(f"apply(): module {target.name!r}", target.module, found,
                                                target.tensor))
    return selected


def _drop_empty(selected: list[Target]) -> list[Target]:
    """Leave out tensors with no weight at all (``nn.Linear(4, 0)``): a mask over nothing has nothing to
    choose, counts 0 in every kept fraction (a 0/0 penalty, a ``max()`` over no entry), and the layer
    behaves the same ungated. Refused when nothing else is selected."""
    # _parameters, not getattr: reading a parametrized weight would run its parametrization (spectral
    # norm's power iteration updates buffers); those are refused later anyway.
    kept = [t for t in selected if _is_uninitialized(t)
            or not isinstance(t.module._parameters.get(t.tensor), Tensor)
            or t.module._parameters[t.tensor].numel() > 0]
    if not kept:
        shown = ", ".join(f"{t.qualified} {tuple(t.module._parameters[t.tensor].shape)}"
                          for t in selected[:6])
        raise NoTargetsError(f"apply(): every selected tensor has no weight ({shown}), so there is nothing "
                             f"to gate; select layers with at least one weight.")
    return kept


def _is_uninitialized(target: Target) -> bool:
    return isinstance(target.module._parameters.get(target.tensor), nn.parameter.UninitializedParameter)


def _no_match_message(model: nn.Module, targets: Selector, exclude: Selector) -> str:
    candidates = [n for n, m in model.named_modules() if n and default_tensors(m)]
    shown = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
    params = [f"{n}.{t}" for n, m in model.named_modules() if n for t in gateable_tensors(m)
              if t not in default_tensors(m)]
    shown_params = ", ".join(params[:5]) + (", ..." if len(params) > 5 else "")
    if not candidates and not params:
        return f"apply(): {type(model).__name__} has no Parameter to gate"
    return (
        f"apply(): targets={targets!r} with exclude={exclude!r} matched no module with a weight and no "
        f"parameter. Names match exactly, as a dotted suffix ('fc1' matches 'net.fc1', "
        f"'in_proj_weight' matches 'enc.attn.in_proj_weight'), as a glob ('*.in_proj_weight') or as a "
        f"full regex. Candidate modules: {shown}" + (f". Other parameters: {shown_params}" if params else "")
    )
