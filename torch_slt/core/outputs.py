"""The logits of a model's output, whatever the model returns: the one helper every layer uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


def logits_of(output: Any, who: str = "torch_slt") -> Tensor:
    """The logits of a model output: a tensor, a tuple / list (its first item), a mapping or a Hugging
    Face ``ModelOutput`` (its ``logits``).

    Example:
        >>> import torch
        >>> logits_of((torch.ones(2, 3), "aux")).shape
        torch.Size([2, 3])
    """
    if isinstance(output, Tensor):
        return output
    value = getattr(output, "logits", None)
    if value is None and isinstance(output, Mapping):
        value = output.get("logits")
    if isinstance(value, Tensor):
        return value
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(
        f"{who}: cannot find logits in the model output ({type(output).__name__}); the model must return "
        f"a tensor, a tuple whose first item is the logits, or an object with a .logits tensor"
    )
