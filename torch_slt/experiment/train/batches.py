"""Devices, batches and evaluation: what :func:`~torch_slt.experiment.train.fit` feeds the model."""

from __future__ import annotations

import warnings

import math
from typing import Any, Iterable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from torch_slt.core.api import gated_tensors
from torch_slt.core.outputs import logits_of


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when available, then MPS, else the CPU; other names are checked."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use cpu, cuda, cuda:N, mps or "
                         f"auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was asked for but MPS is not available here; use --device cpu")
    return dev


def method_of(model: nn.Module) -> str | None:
    """The name of the method gating ``model`` (``None`` for an ungated model); one method per model."""
    names = {type(hook).name for _, _, hook in gated_tensors(model)}
    if len(names) > 1:
        raise ValueError(f"fit(): the model is gated by several methods ({', '.join(sorted(names))}); "
                         f"gate it with one method")
    return names.pop() if names else None


#: Datasets held in memory up to this size are batched by indexing whole tensors (no per-item
#: DataLoader work), on the training device.
IN_MEMORY_BYTES = 1 << 30


class TensorBatches:
    """Batches of in-memory tensors: ``x[idx], y[idx]`` for a permutation drawn from ``generator`` at
    the start of every pass (so a saved generator state replays the same batches)."""

    def __init__(self, inputs: Tensor, targets: Tensor, batch_size: int, *, shuffle: bool,
                 generator: torch.Generator | None = None) -> None:
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size
        self.shuffle, self.generator = shuffle, generator

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __iter__(self):
        n = len(self.targets)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.targets.device)
        for idx in order.split(self.batch_size):
            yield self.inputs[idx], self.targets[idx]


def _in_memory(data: Dataset) -> tuple[Tensor, Tensor] | None:
    """``(inputs, labels)`` of a TensorDataset or a dataset with ``tensors()`` (torch_slt.experiment.data's),
    when they fit in :data:`IN_MEMORY_BYTES`; otherwise None."""
    if isinstance(data, TensorDataset) and len(data.tensors) >= 2:
        return data.tensors[0], data.tensors[1]
    if not callable(getattr(data, "tensors", None)) or len(data) == 0:  # type: ignore[arg-type]
        return None
    first = data[0][0]
    if not isinstance(first, Tensor) or len(data) * first.numel() * 4 > IN_MEMORY_BYTES:  # type: ignore[arg-type]
        return None
    inputs, targets = data.tensors()
    return inputs, targets


def _loader(data: Dataset | DataLoader | Iterable, batch_size: int, *, shuffle: bool,
            generator: torch.Generator | None = None, num_workers: int = 0,
            device: torch.device | None = None) -> Iterable:
    if isinstance(data, Dataset):
        tensors = _in_memory(data) if num_workers == 0 else None
        if tensors is not None:
            inputs, targets = (t.to(device) if device is not None else t for t in tensors)
            return TensorBatches(inputs, targets, batch_size, shuffle=shuffle, generator=generator)
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator,
                          num_workers=num_workers, drop_last=False)
    return data


_logits = logits_of


def _to(batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    inputs, targets = batch[0], batch[1]
    return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset | DataLoader | Iterable, *, batch_size: int = 512,
             device: str | torch.device | None = None) -> float:
    """Top-1 accuracy of ``model`` (in eval mode, so gated models use their hard masks) on ``data``:
    a Dataset of ``(input, label)`` items or an iterable of ``(inputs, labels)`` batches. The model's
    train/eval mode is restored afterwards."""
    if device is None:
        device = next((t.device for t in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    correct = total = 0
    bad = torch.zeros((), dtype=torch.int64)
    try:
        for batch in _loader(data, batch_size, shuffle=False, device=torch.device(device)):
            inputs, targets = _to(batch, torch.device(device))
            logits = _logits(model(inputs))
            correct += int((logits.argmax(-1) == targets).sum())
            total += targets.numel()
            rows = (~torch.isfinite(logits.detach())).reshape(len(logits), -1).any(1)
            bad = bad.to(logits.device) + rows.sum()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("accuracy(): the data is empty")
    if int(bad):
        warnings.warn(f"accuracy(): the model's outputs for {int(bad)} of {total} inputs hold NaN or "
                      f"infinite values, so this accuracy ({correct / total:.4f}) describes a broken model; "
                      f"check the parameters with torch.isfinite(p).all() and the inputs",
                      RuntimeWarning, stacklevel=2)
    return correct / total


def evaluate(model: nn.Module, data: Dataset | DataLoader | Iterable, *, batch_size: int = 512,
             device: str | torch.device | None = None) -> float:
    """Deprecated name of :func:`accuracy` (it returns one float, not :func:`torch_slt.evaluate`'s dict
    of metrics); goes away in the release after 0.2."""
    warnings.warn("torch_slt.experiment.train.evaluate() is renamed accuracy() (it returns the top-1 "
                  "accuracy as a float; torch_slt.evaluate returns a dict of metrics); the old name goes "
                  "away in the release after 0.2", FutureWarning, stacklevel=2)
    return accuracy(model, data, batch_size=batch_size, device=device)
