"""Which modules get gated: the default layer types, names (exact, dotted suffix, regex) or a callable."""

from __future__ import annotations

import re
from typing import Callable, Iterable, Union

from torch import nn

from torch_slt.core.errors import NoTargetsError, UnsupportedModelError
from torch_slt.core.parametrized import parametrization_of, refusal

Selector = Union[str, Iterable[str], Callable[[str, nn.Module], bool], None]

DEFAULT_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_default_target(module: nn.Module) -> bool:
    """``nn.Linear``, ``nn.Conv1d/2d/3d`` and transformers' ``Conv1D`` (GPT-2 style, transposed)."""
    if isinstance(module, DEFAULT_LAYER_TYPES):
        return True
    # Matched by name so that transformers stays an optional dependency.
    return any(c.__name__ == "Conv1D" and c.__module__.startswith("transformers")
               for c in type(module).__mro__)


def has_weight(module: nn.Module) -> bool:
    """Whether ``module`` owns a ``weight`` Parameter (or had one, now gated as ``weight_orig``)."""
    return isinstance(module._parameters.get("weight"), nn.Parameter) or "weight_orig" in module._parameters


def _name_matches(pattern: str, name: str) -> bool:
    if name == pattern or name.endswith("." + pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def matches(selector: Selector, name: str, module: nn.Module) -> bool:
    """Whether ``(name, module)`` is selected by a name, a list of names, or a callable."""
    if callable(selector):
        return bool(selector(name, module))
    if isinstance(selector, str):
        return _name_matches(selector, name)
    return any(_name_matches(p, name) for p in selector)


def _check_selector(selector: Selector, arg: str) -> None:
    if selector is None or callable(selector) or isinstance(selector, str):
        return
    try:
        items = list(selector)
    except TypeError:
        raise TypeError(
            f"apply(): {arg} must be a module name, a list of names or a callable "
            f"(name, module) -> bool, got {type(selector).__name__}"
        ) from None
    if not all(isinstance(p, str) for p in items):
        raise TypeError(f"apply(): every entry of {arg} must be a str, got {items!r}")


def select_targets(model: nn.Module, targets: Selector = None,
                   exclude: Selector = None) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs to gate, in ``named_modules`` order, each module once.

    With ``targets=None`` every default layer type is selected. Only modules that own a ``weight``
    Parameter are considered.
    """
    _check_selector(targets, "targets")
    _check_selector(exclude, "exclude")
    if isinstance(targets, (list, tuple, set)):
        targets = list(targets)
    if isinstance(exclude, (list, tuple, set)):
        exclude = list(exclude)
    selected = []
    for name, module in model.named_modules():
        # Only modules that own a weight are candidates, so a regex or a callable never sees the rest.
        # A weight computed by a parametrization is a candidate too, so that it is refused by name
        # rather than skipped in silence.
        if not has_weight(module) and parametrization_of(module) is None:
            continue
        if targets is None:
            if not is_default_target(module):
                continue
        elif not matches(targets, name, module):
            continue
        if exclude is not None and matches(exclude, name, module):
            continue
        selected.append((name, module))
    if not selected:
        raise NoTargetsError(_no_match_message(model, targets, exclude))
    for name, module in selected:
        found = parametrization_of(module)
        if found is not None:
            raise UnsupportedModelError(refusal(f"apply(): module {name!r}", module, found))
    return selected


def _no_match_message(model: nn.Module, targets: Selector, exclude: Selector) -> str:
    candidates = [n for n, m in model.named_modules()
                  if n and (has_weight(m) or parametrization_of(m) is not None)]
    shown = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
    if not candidates:
        return (f"apply(): {type(model).__name__} has no submodule with a 'weight' Parameter to gate")
    return (
        f"apply(): targets={targets!r} with exclude={exclude!r} matched no module with a weight. "
        f"Names match exactly, as a dotted suffix ('fc1' matches 'net.fc1') or as a full regex. "
        f"Candidate modules: {shown}"
    )
