"""Name -> method class registry. Adding a method is one new file that uses ``@register_method``.

Modelled on timm's model registry: :func:`list_methods` takes a shell-style ``filter`` (``"*gate*"``,
``"s*"``) and a ``kind``, and a class can be registered a second time under an **alias** (a second name,
``cls.name`` unchanged), optionally deprecated: :func:`get_method` then resolves the alias with a
``FutureWarning`` naming the current name, as timm's deprecated model names do.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from typing import TYPE_CHECKING, Iterable

from torch_slt.core.errors import UnknownMethodError

if TYPE_CHECKING:
    from torch_slt.core.base import SLTMethod

_METHODS: dict[str, type[SLTMethod]] = {}
#: alias -> (canonical name, deprecated?)
_ALIASES: dict[str, tuple[str, bool]] = {}

#: What :func:`list_methods`'s ``kind`` selects: a learned mask over frozen weights (a strong ticket),
#: a mask fixed when it is applied, or a learned mask trained together with the weights (a weak ticket).
KINDS = ("learned", "fixed", "weak")


def method_kind(cls: type[SLTMethod]) -> str:
    """``"weak"`` (trains the weights too, e.g. ``cs``), ``"learned"`` or ``"fixed"``."""
    if cls.trains_weights:
        return "weak"
    return "learned" if cls.learned else "fixed"


def register_method(name: str, *, deprecated: bool = False):
    """Class decorator that registers an :class:`~torch_slt.core.base.SLTMethod` under ``name``.

    Registering a class that is already registered adds ``name`` as an alias: ``get_method(name)``
    returns the class, ``cls.name`` and :func:`list_methods` keep the first name. With
    ``deprecated=True`` the alias warns (``FutureWarning``) each time it is resolved; use it when a
    method is renamed.

    Example:
        >>> from torch_slt.core.base import FixedMaskMethod
        >>> @register_method("my_method")   # doctest: +SKIP
        ... class MyMethod(FixedMaskMethod): ...
        >>> register_method("my_old_name", deprecated=True)(MyMethod)   # doctest: +SKIP
    """
    if not isinstance(name, str):
        raise TypeError(f"register_method(): name must be a str, got {type(name).__name__}")
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"register_method(): name {name!r} must be a lower-case identifier")
    if not isinstance(deprecated, bool):
        raise TypeError(f"register_method(): deprecated must be True or False, got {deprecated!r}")

    def decorator(cls: type[SLTMethod]) -> type[SLTMethod]:
        owner = _METHODS.get(name) or (_METHODS.get(_ALIASES[name][0]) if name in _ALIASES else None)
        if owner is not None and owner is not cls:
            raise ValueError(f"register_method(): {name!r} is already registered by {owner.__qualname__}")
        if _METHODS.get(cls.name) is cls and cls.name != name:   # already registered: an alias
            _ALIASES[name] = (cls.name, deprecated)
            return cls
        if deprecated:
            raise ValueError(f"register_method(): {name!r} cannot be deprecated: {cls.__qualname__} is not "
                             f"registered yet; register its current name first, then the old one with "
                             f"deprecated=True")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorator


def list_methods(filter: str | Iterable[str] | None = None, kind: str | None = None) -> list[str]:
    """The registered method names, sorted (aliases left out).

    Args:
        filter: a shell-style pattern (:mod:`fnmatch`: ``"*gate*"``, ``"s*"``, ``"[eh]*"``) or a list of
            them (a name matching any is kept), as timm's ``list_models(filter=...)``.
        kind: ``"learned"`` (learned mask, frozen weights: a strong ticket), ``"fixed"`` (mask chosen at
            apply) or ``"weak"`` (mask learned with the weights, e.g. ``cs``).

    Example:
        >>> list_methods("s*"), list_methods(kind="weak")
        (['snip', 'stg', 'supermask', 'synflow'], ['cs'])
    """
    if filter is None:
        patterns: list[str] | None = None
    elif isinstance(filter, str):
        patterns = [filter]
    elif isinstance(filter, (list, tuple, set, frozenset)) and all(isinstance(f, str) for f in filter):
        patterns = list(filter)
    else:
        raise TypeError(f"list_methods(): filter must be a pattern (str) or a list of them, got {filter!r}")
    if kind is not None:
        if not isinstance(kind, str):
            raise TypeError(f"list_methods(): kind must be a str, one of {', '.join(KINDS)}; got {kind!r}")
        if kind not in KINDS:
            raise ValueError(f"list_methods(): kind={kind!r} is not one of {', '.join(map(repr, KINDS))}")
    names = sorted(_METHODS)
    if patterns is not None:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p.lower()) for p in patterns)]
    if kind is not None:
        names = [n for n in names if method_kind(_METHODS[n]) == kind]
    return names


def get_method(method: str | type[SLTMethod]) -> type[SLTMethod]:
    """Resolve a method name, an alias (a deprecated one warns) or an :class:`SLTMethod` subclass to
    its class."""
    from torch_slt.core.base import SLTMethod

    if isinstance(method, type) and issubclass(method, SLTMethod):
        return method
    if isinstance(method, SLTMethod):
        raise TypeError(
            f"get_method(): got an instance of {type(method).__name__}; pass the class or its name"
        )
    if not isinstance(method, str):
        raise TypeError(f"get_method(): method must be a name (str), got {type(method).__name__}")
    key = method.strip().lower().replace("-", "_")
    if key in _METHODS:
        return _METHODS[key]
    if key in _ALIASES:
        canonical, deprecated = _ALIASES[key]
        if deprecated:
            warnings.warn(f"method {method!r} is deprecated and renamed {canonical!r}; use {canonical!r} "
                          f"(the old name goes away in a later release)", FutureWarning, stacklevel=3)
        return _METHODS[canonical]
    close = difflib.get_close_matches(key, list(_METHODS) + list(_ALIASES), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownMethodError(
        f"unknown method {method!r}.{hint} Valid methods: {', '.join(list_methods())}."
    )
