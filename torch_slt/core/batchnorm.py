"""BatchNorm statistics that match the ticket: :func:`recalibrate_batchnorm` and its staleness check.

A learned method whose training forward is not its hard mask (``stg`` and ``hardconcrete`` sample noisy
gates, ``supermask`` samples Bernoulli masks, ``cs`` multiplies by a soft sigmoid mask:
:attr:`~torch_slt.core.base.LearnedMaskMethod.relaxed_forward`) trains a BatchNorm network whose running
mean and variance describe the *relaxed* network. In eval mode the ticket runs with the binary mask,
whose activations have other statistics, and normalising them with the wrong ones compounds layer after
layer: on a frozen ResNet-18 (width 1/8, Fashion-MNIST 5k, 6 epochs) stg's ticket at 50 % sparsity
scored 26.1 % with the statistics of training and 74.7 % after re-estimating them with the hard mask
(hardconcrete 10.3 % -> 71.2 %; edge-popup, whose training forward is its hard mask, 79.7 %). The same
re-estimation is what SWA's ``torch.optim.swa_utils.update_bn`` does after averaging weights; it cannot be
used as is because it puts the whole model in train mode, where the gates sample again.

:func:`recalibrate_batchnorm` puts every module in eval mode (gates use the hard mask, dropout is off)
except the BatchNorm layers, resets their statistics and averages them over the batches given (a
cumulative average, ``momentum=None``). It records the ``num_batches_tracked`` it left on each layer,
so :func:`stale_batchnorm` can tell, at ``report()``/``finalize()``, that a later training step made
the statistics stale again (:mod:`torch_slt.core.health` warns then).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from torch_slt.core.gated import gated_tensors

#: Attribute left on a BatchNorm layer by :func:`recalibrate_batchnorm`: its ``num_batches_tracked`` then.
_RECALIBRATED_AT = "_torch_slt_recalibrated_at"


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics (the only ones eval mode reads)."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


#: Layers that renormalise activations: they undo the shrink a sampled mask causes at every layer.
_NORMALIZATION = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
                  nn.RMSNorm)


def normalization_layers(model: nn.Module) -> list[nn.Module]:
    """The normalisation layers of ``model`` (BatchNorm, InstanceNorm, LayerNorm, GroupNorm, RMSNorm,
    and any module whose class name ends in ``Norm``, as Hugging Face's and timm's own do)."""
    return [m for m in model.modules()
            if isinstance(m, _NORMALIZATION) or type(m).__name__.lower().endswith(("norm", "norm2d"))]


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], *, steps: int | None = None) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics with the ticket's hard masks in place.

    Call it after training a BatchNorm network with ``stg``, ``hardconcrete``, ``supermask`` or ``cs``
    (whose training forward samples or relaxes the mask) and before evaluating the ticket; on a
    finalized model it re-estimates the statistics of the plain network. ``torch_slt.experiment.train.fit``
    (and so ``torch-slt find``) does it for you.

    Args:
        model: a gated or finalized model. Its BatchNorm layers are put in train mode and every other
            module in eval mode (hard masks, no dropout) for the passes; every module's mode is restored.
        batches: an iterable of inputs: tensors, ``(inputs, labels)`` tuples or lists (the first item is
            the input), or mappings of keyword arguments (a Hugging Face batch; ``labels`` is dropped). A
            training ``DataLoader`` works. Tensors are moved to the model's device.
        steps: use at most this many batches (default: all of them).

    Returns:
        ``model``, with new running statistics (unchanged when it has no BatchNorm layer).

    Raises:
        ValueError: ``batches`` holds no input, or ``steps`` is not a positive int; the model is unchanged,
            as it is when a forward raises (the statistics are restored).

    Example:
        >>> import torch, torch_slt
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        >>> net = torch_slt.apply(net, "stg", sparsity=0.5)
        >>> _ = torch_slt.recalibrate_batchnorm(net, [torch.randn(8, 1, 6, 6)])
        >>> int(net[1].num_batches_tracked)
        1
    """
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"recalibrate_batchnorm: steps={steps!r} must be a positive int (or None: every "
                         f"batch)")
    norms = batchnorm_layers(model)
    if not norms:
        return model
    device = next((p.device for p in model.parameters()), None)
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise ValueError("recalibrate_batchnorm: batches gave no input; pass the training DataLoader or a "
                         "list of input tensors from the training data")
    saved_stats = [{k: v.clone() for k, v in m._buffers.items() if v is not None} for m in norms]
    saved_momentum = [m.momentum for m in norms]
    saved_modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None   # a cumulative average over the batches, not an exponential one
            m.train()
        with torch.no_grad():
            batch, seen = first, 0
            while batch is not None and (steps is None or seen < steps):
                _forward(model, batch, device)
                seen += 1
                batch = next(iterator, None)
    except BaseException:
        for m, stats in zip(norms, saved_stats):
            for key, value in stats.items():
                m._buffers[key].copy_(value)
        raise
    finally:
        for m, momentum in zip(norms, saved_momentum):
            m.momentum = momentum
        for m, mode in saved_modes:
            m.training = mode
    for m in norms:
        setattr(m, _RECALIBRATED_AT, int(m.num_batches_tracked))
    return model


def _forward(model: nn.Module, batch: Any, device: torch.device | None) -> None:
    if isinstance(batch, Mapping):
        model(**{k: _to(v, device) for k, v in batch.items() if k != "labels"})
        return
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    model(_to(batch, device))


def _to(value: Any, device: torch.device | None) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) and device is not None else value


def stale_batchnorm(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers whose statistics were gathered under relaxed training masks.

    Empty unless ``model`` is gated by a method with a relaxed training forward. A layer is stale when it
    has tracked a training batch since it was last recalibrated (or was never recalibrated). Reads one
    int per layer from the device: for ``report()`` and ``finalize()``, not the training step.
    """
    if not any(hook.relaxed_forward for _, _, hook in gated_tensors(model)):
        return []
    stale = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            tracked = int(m.num_batches_tracked)
            if tracked and getattr(m, _RECALIBRATED_AT, None) != tracked:
                stale.append(name or type(m).__name__)
    return stale
