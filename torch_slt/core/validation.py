"""Argument checks shared by the API and the methods. Each message names the bad value and the fix.

One rule, as in Python itself: a value of the wrong **type** (a string for a number, a float for a step
count, a bool anywhere a number goes) raises ``TypeError``; a value of the right type that is **out of
range** (a negative ``lam``, ``sparsity=1.5``, an unknown choice) raises ``ValueError`` (``NonFiniteError``,
a ``ValueError``, for NaN and infinity). Keywords the method does not take, and both ``sparsity`` and
``amount`` at once, are ``TypeError`` as Python raises for a bad call. A number is any real number:
``int``, ``float`` and numpy scalars such as ``np.float32`` (``numbers.Real``), never ``bool``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Iterable


def _is_real(value: Any) -> bool:
    """A real number (``numbers.Real``: int, float, numpy scalars), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    """An integer (``numbers.Integral``: int, numpy integers), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


#: The same checks under public names, for methods that validate their own arguments (``seed``,
#: ``iterations``, ``score_init``).
is_real, is_integer = _is_real, _is_integer


def sparsity_or_amount(sparsity: Any, amount: Any, who: str) -> tuple[Any, str]:
    """``amount`` is torch.nn.utils.prune's name for the fraction removed: accept either, never both.

    Returns the value and the name the user gave, for :func:`check_sparsity`'s messages. An int
    ``amount`` is refused: torch reads it as a number of weights, torch_slt only takes fractions.
    """
    if amount is None:
        return sparsity, "sparsity"
    if sparsity is not None:
        raise TypeError(f"{who}: got both sparsity={sparsity!r} and amount={amount!r}; amount is torch's "
                        f"name for sparsity (the fraction of weights removed): pass only one")
    if _is_integer(amount):
        raise TypeError(f"{who}: amount={amount!r} is an int, which torch.nn.utils.prune reads as a number "
                        f"of weights; torch_slt takes the fraction removed, a float in [0, 1) such as "
                        f"amount=0.9")
    return amount, "amount"


def check_sparsity(sparsity: Any, who: str, *, required: bool = True, name: str = "sparsity") -> float | None:
    """``sparsity`` is the fraction of weights **removed**, a float in [0, 1) (``name``: the keyword the
    user gave, ``sparsity`` or torch's ``amount``)."""
    if sparsity is None:
        if required:
            raise TypeError(
                f"{who}: sparsity is required (the fraction of weights to remove, in [0, 1)), "
                f"e.g. sparsity=0.9"
            )
        return None
    if not _is_real(sparsity):
        raise TypeError(f"{who}: {name} must be a float in [0, 1), got {sparsity!r}")
    if not (0.0 <= float(sparsity) < 1.0) or math.isnan(sparsity):
        raise ValueError(
            f"{who}: {name}={sparsity!r} is outside [0, 1); it is the fraction of weights removed "
            f"(0.9 keeps 10%)"
        )
    return float(sparsity)


def check_nonnegative(name: str, value: Any, who: str) -> float:
    _check_finite_number(name, value, who)
    if value < 0:
        raise ValueError(f"{who}: {name}={value!r} is negative; use a value >= 0")
    return float(value)


def check_positive(name: str, value: Any, who: str) -> float:
    _check_finite_number(name, value, who)
    if value <= 0:
        raise ValueError(f"{who}: {name}={value!r} must be > 0")
    return float(value)


def _check_finite_number(name: str, value: Any, who: str) -> None:
    """A real number that is neither NaN nor infinite: ``lam=inf`` would make every gate close at the
    first step (and ``inf * 0`` in the penalty is NaN), so it is refused like NaN."""
    if not _is_real(value):
        raise TypeError(f"{who}: {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        from torch_slt.core.errors import NonFiniteError

        raise NonFiniteError(f"{who}: {name}={value!r} is not a finite number; give a finite value")


def check_finite(name: str, value: Any, who: str) -> float:
    """Any finite real number (an initial logit or gate mean)."""
    _check_finite_number(name, value, who)
    return float(value)


def check_probability(name: str, value: Any, who: str) -> float:
    """A number strictly between 0 and 1."""
    if not _is_real(value):
        raise TypeError(f"{who}: {name} must be a number strictly between 0 and 1, got {value!r}")
    if not 0.0 < value < 1.0:
        raise ValueError(f"{who}: {name}={value!r} must be a probability strictly between 0 and 1")
    return float(value)


def check_optional_positive_int(name: str, value: Any, who: str) -> int | None:
    """``None`` or an integer >= 1 (a step count)."""
    if value is None:
        return None
    if not _is_integer(value):
        raise TypeError(f"{who}: {name} must be an int (a number of optimiser steps, e.g. "
                        f"len(loader) * epochs) or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{who}: {name}={value!r} must be a positive integer (a number of optimiser steps, "
                         f"e.g. len(loader) * epochs) or None")
    return int(value)


def check_fraction(name: str, value: Any, who: str) -> float:
    """A number in (0, 1]."""
    if not _is_real(value):
        raise TypeError(f"{who}: {name} must be a number in (0, 1], got {value!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{who}: {name}={value!r} must be a fraction in (0, 1]")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of ``choices`` (strings): another type is a ``TypeError``, another string a ``ValueError``."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(map(repr, choices))}; got {value!r}")
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return value


def check_kwargs(cls: type, kwargs: dict[str, Any], extra: Iterable[str] = ()) -> None:
    """Reject keywords that ``cls.__init__`` does not accept, listing the ones it does."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    # Underscore names are handed over internally (by a method's plan()), never by users.
    accepted = [n for n in params if n != "self" and not n.startswith("_")] + list(extra)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"apply(): method {cls.name!r} got unknown keyword(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(accepted)) or '(none)'}"
        )
