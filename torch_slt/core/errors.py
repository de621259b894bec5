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


class MethodMismatchError(SLTError, ValueError):
    """A checkpoint saved from gates of one method is loaded into gates of another (``edgepopup`` scores
    into ``supermask``): the keys may match while their meaning does not."""


class UnknownModelError(SLTError, ValueError):
    """The model name is not in the zoo (or not a timm model)."""


class UnknownDatasetError(SLTError, ValueError):
    """The dataset name is not one torch_slt can load."""


class DatasetNotFoundError(SLTError, FileNotFoundError):
    """The dataset files are not where they were looked for; the message says where and how to get them."""


class TicketMismatchError(SLTError, ValueError):
    """A compact ticket does not fit the weights this installation generates (or the model given)."""


class TicketFormatError(SLTError, ValueError):
    """A compact ticket file that cannot be trusted: empty, truncated, not a safetensors file, a header
    field missing or malformed, a tensor that fits no gated weight, or a checksum that does not match
    (a flipped byte)."""


class UnsupportedModelError(SLTError, ValueError):
    """The model uses a targeted weight in a way a gate cannot follow (e.g. tied to another module)."""


class SettingError(SLTError, ValueError):
    """A setting of a typed settings object is out of range. ``setting`` names the field and ``value``
    holds what was given, so a front end (the command line) can name its own flag for it."""

    def __init__(self, setting: str, value: object, reason: str, owner: str = "TrainConfig") -> None:
        self.setting, self.value, self.reason = setting, value, reason
        super().__init__(f"{owner}: {setting}={value!r} {reason}")


class NonFiniteError(SLTError, ValueError):
    """A hyperparameter or a gate tensor holds NaN or infinity."""


class NonFiniteGateError(NonFiniteError):
    """A learned gate tensor holds NaN or infinity (after a step on a non-finite batch or loss), so its
    hard mask would be meaningless. ``names`` lists the qualified gate tensors."""

    def __init__(self, message: str, names: list[str]) -> None:
        self.names = names
        super().__init__(message)


class DatasetFormatError(SLTError, ValueError):
    """A dataset file is there but is not in the expected format (truncated, or a pickle that refers to
    code the official files never do)."""
