"""What every metric reads: the model, the test tensors, the settings, and the clean logits (computed
once and shared)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from torch_slt.core.errors import SLTError
from torch_slt.evaluation.settings import EvalSettings
from torch_slt.core.outputs import logits_of


class EvaluationInputError(SLTError, TypeError, ValueError):
    """The data (or another argument) given to :func:`torch_slt.evaluate` cannot be used; the message
    says what is accepted."""


@dataclass
class Pixels:
    """Per-channel normalisation ``x = (pixel - mean) / std``; pixels live in [0, 1]."""

    mean: Tensor
    std: Tensor

    def to_pixels(self, x: Tensor) -> Tensor:
        return x * self.std.to(x) + self.mean.to(x)

    def normalize(self, pixels: Tensor) -> Tensor:
        return (pixels - self.mean.to(pixels)) / self.std.to(pixels)


@dataclass
class EvalContext:
    """The test data as tensors and the model in eval mode; ``logits`` is computed on first use."""

    model: nn.Module
    inputs: Tensor
    labels: Tensor
    settings: EvalSettings
    pixels: Pixels
    device: torch.device
    num_classes: int
    reference: dict[str, Any] | None = None  # the dense model's results (mCE, per-class change)
    _logits: Tensor | None = None

    @property
    def logits(self) -> Tensor:
        if self._logits is None:
            self._logits = self.predict(self.inputs)
        return self._logits

    @property
    def probs(self) -> Tensor:
        return self.logits.softmax(dim=1)

    @torch.no_grad()
    def predict(self, inputs: Tensor) -> Tensor:
        """Logits (float32, on the CPU) of ``inputs``, in batches of ``settings.batch_size``."""
        out = [_logits(self.model(chunk.to(self.device))).float().cpu()
               for chunk in inputs.split(self.settings.batch_size)]
        logits = torch.cat(out) if out else torch.empty(0, self.num_classes)
        check_finite_outputs(logits, inputs)
        return logits


def check_finite_outputs(logits: Tensor, inputs: Tensor) -> None:
    """Refuse NaN or infinite logits: argmax still picks a class (so accuracy looks plausible) while the
    likelihood and calibration are NaN, and every number would describe a broken model."""
    finite = torch.isfinite(logits).flatten(1).all(dim=1) if logits.ndim > 1 else torch.isfinite(logits)
    if bool(finite.all()):
        return
    from torch_slt.core.errors import NonFiniteError

    bad = int((~finite).sum())
    cause = ("the inputs themselves hold NaN/inf: repair or drop those samples"
             if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()) else
             "check the model's parameters and buffers with torch.isfinite(p).all() (a training step on a "
             "NaN batch, an overflow in float16), and for a gated model torch_slt.report(model)")
    raise NonFiniteError(f"evaluate(): the model's outputs for {bad} of {len(logits)} test inputs hold NaN "
                         f"or infinite values, so accuracy, NLL and calibration would be meaningless; "
                         f"{cause}.")


_logits = logits_of


def as_tensors(data: Any) -> tuple[Tensor, Tensor]:
    """``(inputs, labels)`` of a torch_slt ``DataSplits`` (its test split), an ``ImageDataset``, a
    ``TensorDataset``, an ``(inputs, labels)`` pair, or any Dataset of ``(input, label)`` items."""
    if hasattr(data, "test") and hasattr(data, "train"):  # DataSplits: the test split
        data = data.test
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        inputs, labels = data
    elif isinstance(data, TensorDataset):
        inputs, labels = data.tensors[0], data.tensors[1]
    elif callable(getattr(data, "tensors", None)):
        inputs, labels = data.tensors()
    elif isinstance(data, Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        inputs = torch.stack([torch.as_tensor(x) for x, _ in items])
        labels = torch.as_tensor([int(y) for _, y in items])
    else:
        raise EvaluationInputError(f"evaluate(): data must be a Dataset, DataSplits or an (inputs, labels) "
                                   f"pair of tensors, got {type(data).__name__}")
    if len(inputs) != len(labels) or len(labels) == 0:
        raise EvaluationInputError(f"evaluate(): {len(inputs)} inputs and {len(labels)} labels; need the "
                                   f"same, non-zero number")
    return inputs.float(), labels.long()


def pixels_of(data: Any, inputs: Tensor, settings: EvalSettings) -> Pixels:
    """The normalisation of ``data``: the settings' mean/std, else the dataset's, else identity."""
    if hasattr(data, "test") and hasattr(data, "train"):
        data = data.test
    channels = inputs.shape[1] if inputs.ndim >= 2 else 1
    shape = (1, channels) + (1,) * max(inputs.ndim - 2, 0)
    if settings.mean is not None and settings.std is not None:
        mean, std = torch.tensor(settings.mean), torch.tensor(settings.std)
    elif isinstance(getattr(data, "mean", None), Tensor) and isinstance(getattr(data, "std", None), Tensor):
        mean, std = data.mean.flatten(), data.std.flatten()
    else:
        mean, std = torch.zeros(1), torch.ones(1)
    return Pixels(mean.float().expand(channels).reshape(shape).clone(),
                  std.float().expand(channels).reshape(shape).clone())
