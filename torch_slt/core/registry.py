"""Name -> method class registry. Adding a method is one new file that uses ``@register_method``."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from torch_slt.core.errors import UnknownMethodError

if TYPE_CHECKING:
    from torch_slt.core.base import SLTMethod

_METHODS: dict[str, type[SLTMethod]] = {}


def register_method(name: str):
    """Class decorator that registers an :class:`~torch_slt.core.base.SLTMethod` under ``name``.

    Example:
        >>> from torch_slt.core.base import FixedMaskMethod
        >>> @register_method("my_method")   # doctest: +SKIP
        ... class MyMethod(FixedMaskMethod): ...
    """
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"register_method(): name {name!r} must be a lower-case identifier")

    def decorator(cls: type[SLTMethod]) -> type[SLTMethod]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(
                f"register_method(): {name!r} is already registered by {_METHODS[name].__qualname__}"
            )
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorator


def list_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_METHODS)


def get_method(method: str | type[SLTMethod]) -> type[SLTMethod]:
    """Resolve a method name (or an :class:`SLTMethod` subclass) to its class."""
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
    close = difflib.get_close_matches(key, _METHODS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownMethodError(
        f"unknown method {method!r}.{hint} Valid methods: {', '.join(list_methods())}."
    )
