"""Machinery shared by the pruning-at-initialisation scorers (``snip``, ``grasp``, ``synflow``, ``random``).

* :class:`preserved_state`: a context manager that puts the model back exactly as it was (parameter
  tensors and dtypes, buffers such as BatchNorm running statistics and ``num_batches_tracked``, the
  train/eval mode of every submodule, ``requires_grad`` flags, existing ``.grad`` tensors, and the
  global RNG states of torch, CUDA, Python's :mod:`random` and NumPy).
* :func:`iter_batches`, :func:`forward`, :func:`logits`, :func:`batch_loss`: turn ``data`` (one
  ``(inputs, targets)`` batch or an iterable of batches) into losses, whatever the model returns (a
  tensor, a tuple or a Hugging Face ``ModelOutput``), with errors that name the expected input.
* :class:`DataScoredMethod`: the base of methods that score with data; it validates ``data`` /
  ``loss_fn`` before the model is touched and drops them once the mask is chosen, so the hooks left on
  the model hold no reference to the data (pickling and ``deepcopy`` stay cheap and possible).
"""

from __future__ import annotations

import random as _pyrandom
import sys
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from torch_slt.core.base import SAVED_MASK, FixedMaskMethod
from torch_slt.core.targets import target_tensor
from torch_slt.core.outputs import logits_of

Batch = tuple[Any, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------- state
class preserved_state:
    """Context manager: whatever happens inside, ``model`` and the global RNGs come back as they were.

    Restored on exit (also when an exception is raised): every parameter's tensor (the same storage and
    dtype; scorers may swap ``param.data`` for a float64 copy), every buffer (the same object, with its
    values copied back, so BatchNorm running statistics and ``num_batches_tracked`` are untouched), the
    ``training`` flag of every submodule, ``requires_grad`` and ``.grad`` of every parameter, and the
    CPU / CUDA torch RNG states, Python's :mod:`random` state and NumPy's global state (if imported).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> preserved_state:
        model = self.model
        self._modes = [(m, m.training) for m in model.modules()]
        self._params = [(p, p.data, p.requires_grad, p.grad) for p in _unique_parameters(model)]
        self._buffers = [(m, key, buf, buf.detach().clone())
                         for m in model.modules() for key, buf in m._buffers.items() if buf is not None]
        self._rng = torch.get_rng_state()
        self._py_rng = _pyrandom.getstate()
        numpy = sys.modules.get("numpy")  # only if the user's code already imported it
        self._np_rng = (numpy, numpy.random.get_state()) if numpy is not None else None
        self._cuda_rng = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self._cuda_rng = torch.cuda.get_rng_state_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for param, data, flag, grad in self._params:
                if param.dtype != data.dtype or param.data_ptr() != data.data_ptr() or \
                        param.shape != data.shape:
                    param.data = data
                param.requires_grad_(flag)
                param.grad = grad
            for module, key, buf, saved in self._buffers:
                module._buffers[key] = buf
                buf.copy_(saved)
        for module, mode in self._modes:
            module.training = mode
        torch.set_rng_state(self._rng)
        _pyrandom.setstate(self._py_rng)
        if self._np_rng is not None:
            self._np_rng[0].random.set_state(self._np_rng[1])
        if self._cuda_rng is not None:
            torch.cuda.set_rng_state_all(self._cuda_rng)


def _unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.parameters())  # deduplicated by torch (tied weights appear once)


def scoring_mode(model: nn.Module, weights: list[nn.Parameter]) -> None:
    """Eval mode (as the reference scores, ``Synaptic-Flow/prune.py``) and gradients on ``weights``.

    Call inside :class:`preserved_state`, which undoes both.
    """
    model.eval()
    for w in weights:
        w.requires_grad_(True)


def model_device(model: nn.Module, targets: list[tuple[str, nn.Module]] | None = None) -> torch.device:
    if targets:
        return target_tensor(targets[0]).device
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------- data
def is_batch(obj: Any) -> bool:
    """Whether ``obj`` is one ``(inputs, targets)`` batch (inputs a tensor or a dict of tensors)."""
    return (isinstance(obj, (tuple, list)) and len(obj) == 2
            and isinstance(obj[0], (Tensor, Mapping)) and isinstance(obj[1], Tensor))


def missing_data_error(who: str) -> TypeError:
    return TypeError(
        f"{who}: data is required: one (inputs, targets) batch or an iterable of batches (a DataLoader), "
        f"e.g. torch_slt.apply(model, {who!r}, sparsity=0.9, data=next(iter(train_loader)))"
    )


def check_data(data: Any, who: str) -> None:
    """Cheap checks that do not consume ``data`` (it may be a one-shot iterator)."""
    if data is None:
        raise missing_data_error(who)
    if data is SAVED_MASK:   # rebuilt from a checkpoint to install its mask: never scored
        return
    if is_batch(data):
        return
    if isinstance(data, (Tensor, str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(
            f"{who}: data must be one (inputs, targets) batch or an iterable of such batches, got "
            f"{_describe(data)}; pass e.g. data=(images, labels)"
        )


def iter_batches(data: Any, who: str) -> Iterator[Batch]:
    """Yield the ``(inputs, targets)`` batches of ``data`` (one batch, or an iterable of batches)."""
    check_data(data, who)
    if data is SAVED_MASK:
        raise TypeError(f"{who}: this method was rebuilt from a checkpoint to install its saved mask and has "
                        f"no data to score with; build it with data=... to compute a new mask")
    if is_batch(data):
        yield data[0], data[1]
        return
    count = 0
    for item in data:
        if not is_batch(item):
            raise TypeError(
                f"{who}: every element of data must be an (inputs, targets) pair with a tensor (or a dict "
                f"of tensors) as inputs and a tensor as targets; element {count} is {_describe(item)}"
            )
        count += 1
        yield item[0], item[1]
    if count == 0:
        raise ValueError(f"{who}: data yielded no batch; pass at least one (inputs, targets) batch")


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def _describe(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        return "a dict with keys " + ", ".join(
            f"{k!r}: {tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}" for k, v in obj.items())
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} ({', '.join(type(o).__name__ for o in obj)})"
    return f"a {type(obj).__name__}"


def expected_input(model: nn.Module) -> str:
    """A hint on the input ``model`` expects, read off its first Linear / Conv layer."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            spatial = {nn.Conv1d: "L", nn.Conv2d: "H, W", nn.Conv3d: "D, H, W"}.get(type(module), "...")
            return (f"inputs shaped (N, {module.in_channels}, {spatial}) (its first layer {name!r} is "
                    f"{type(module).__name__}(in_channels={module.in_channels}))")
        if isinstance(module, nn.Linear):
            return (f"inputs whose last dimension, after any flattening in the model, is "
                    f"{module.in_features} (its first layer {name!r} is Linear(in_features="
                    f"{module.in_features}))")
    return "an input the model's forward accepts"


def forward(model: nn.Module, inputs: Any, who: str) -> Any:
    """``model(inputs)`` (``model(**inputs)`` for a dict); the model's own error is wrapped in a
    ``ValueError`` that names the input it got and the input it expects."""
    try:
        return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"{who}: the model could not run on the data: got inputs {_describe(inputs)}; "
            f"{type(model).__name__} expects {expected_input(model)}. Pass data=(inputs, targets) "
            f"batches that the model accepts as model(inputs). The model raised "
            f"{type(err).__name__}: {err}"
        ) from err


logits = logits_of   # (the name this module used)


def batch_loss(model: nn.Module, batch: Batch, loss_fn: LossFn, device: torch.device, who: str,
               temperature: float = 1.0) -> Tensor:
    """``loss_fn(logits(model(inputs)) / temperature, targets)``, a scalar, with clear errors."""
    inputs, targets = to_device(batch[0], device), to_device(batch[1], device)
    check_finite_inputs(inputs, who)
    out = logits(forward(model, inputs, who), who)
    if temperature != 1.0:
        out = out / temperature
    try:
        loss = loss_fn(out, targets)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"{who}: loss_fn failed on logits of shape {tuple(out.shape)} and targets {_describe(targets)}; "
            f"with the default cross entropy, targets are class indices of shape (N,). loss_fn raised "
            f"{type(err).__name__}: {err}"
        ) from err
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(f"{who}: loss_fn must return a scalar tensor, got {_describe(loss)}")
    if not bool(torch.isfinite(loss.detach()).all()):
        from torch_slt.core.errors import NonFiniteError

        raise NonFiniteError(
            f"{who}: the loss on a data batch is {loss.item()}, so its gradients cannot score the weights; "
            f"check the model's weights and outputs for NaN/inf (torch.isfinite) or use a loss_fn that "
            f"stays finite. The model is left unchanged.")
    return loss.reshape(())


def check_finite_inputs(inputs: Any, who: str) -> None:
    """Refuse a batch whose floating inputs hold NaN or infinity: its gradients would be NaN and the
    scores would rank NaN first (a mask chosen by NaN, without a word)."""
    tensors = inputs.items() if isinstance(inputs, Mapping) else [("inputs", inputs)]
    for key, value in tensors:
        if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            from torch_slt.core.errors import NonFiniteError

            bad = int((~torch.isfinite(value)).sum())
            where = "inputs" if key == "inputs" else f"inputs[{key!r}]"
            raise NonFiniteError(
                f"{who}: the data batch's {where} hold {bad} NaN or infinite value(s) (shape "
                f"{tuple(value.shape)}); scores from them would choose the mask by NaN. Drop or repair those "
                f"samples (e.g. x[torch.isfinite(x).flatten(1).all(1)]) and pass finite data. The model is "
                f"left unchanged.")


def grads(output: Tensor, weights: list[Tensor], **kwargs: Any) -> list[Tensor]:
    """``torch.autograd.grad`` with zeros for weights that do not influence ``output``.

    Nothing is accumulated into ``.grad``: the user's gradients are never touched.
    """
    if not output.requires_grad:
        return [torch.zeros_like(w) for w in weights]
    got = torch.autograd.grad(output, weights, allow_unused=True, **kwargs)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(weights, got)]


def default_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross entropy, the default ``loss_fn`` of the data-driven scorers."""
    return nn.functional.cross_entropy(logits, targets)


# ---------------------------------------------------------------------------------------------- base
class DataScoredMethod(FixedMaskMethod):
    """A fixed-mask method whose scores need ``data`` (and a ``loss_fn``).

    ``data`` and ``loss_fn`` are checked when the method is built (before the model is touched) and are
    dropped from each hook once its mask is set, so no reference to the data stays on the model.
    """

    scoring_inputs = ("data",)

    def __init__(self, sparsity: float | None = None, scope: str = "global", data: Any = None,
                 loss_fn: LossFn | None = None, *, amount: float | None = None, rounding: str = "torch") -> None:
        super().__init__(sparsity, scope, amount=amount, rounding=rounding)
        who = type(self).name or type(self).__name__
        check_data(data, who)
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"{who}: loss_fn must be a callable (logits, targets) -> scalar loss, "
                            f"got {type(loss_fn).__name__}")
        self.data = data
        self.loss_fn = loss_fn

    @property
    def _loss_fn(self) -> LossFn:
        return self.loss_fn if self.loss_fn is not None else default_loss

    def init_state(self, module: nn.Module, orig: Tensor, mask: Tensor | None,
                   importance_scores: Tensor | None) -> None:
        super().init_state(module, orig, mask, importance_scores)
        self.data = None
        self.loss_fn = None
