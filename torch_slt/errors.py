"""Exception types. Each subclasses a built-in type so ``except ValueError`` keeps working."""

from __future__ import annotations


class SLTError(Exception):
    """Base class of every error torch_slt raises on purpose."""


class UnknownMethodError(SLTError, ValueError):
    """The method name is not registered."""


class NoTargetsError(SLTError, ValueError):
    """``targets`` / ``exclude`` selected no module to gate."""


class AlreadyGatedError(SLTError, ValueError):
    """The tensor already carries a pruning method (torch_slt's or torch's)."""


class NotGatedError(SLTError, ValueError):
    """The model carries no torch_slt gate where one was expected."""
