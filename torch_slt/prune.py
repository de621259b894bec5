"""Functional twins of :mod:`torch.nn.utils.prune`: ``torch_slt.prune.<method>(module, name, **kwargs)``.

One function per registered method, named after it, with torch's contract: gate ``module.<name>`` in
place (``<name>_orig``, ``<name>_mask``, a forward pre-hook) and return ``module``. Next to torch's::

    >>> import torch, torch_slt
    >>> from torch.nn.utils import prune
    >>> a = prune.l1_unstructured(torch.nn.Linear(4, 3), "weight", amount=0.5)
    >>> b = torch_slt.prune.magnitude(torch.nn.Linear(4, 3), "weight", amount=0.5)
    >>> c = torch_slt.prune.stg(torch.nn.Linear(4, 3), "bias", lam=0.1)
    >>> int(b.weight_mask.sum()), sorted(n for n, _ in c.named_parameters())
    (6, ['bias_mu', 'bias_orig', 'weight'])

Differences from :func:`torch_slt.apply`, which gates the ``weight`` of every targeted module of a
whole model: these act on one tensor of one module, any parameter name (``"bias"`` too); like torch
they change nothing else (no parameter is frozen: train ``torch_slt.mask_parameters(module)``); and a
fixed-mask method ranks this tensor alone. ``snip``, ``grasp`` and ``synflow`` score with a forward
pass of the whole model, so here they need ``importance_scores=``. ``amount=`` is accepted as torch's
name for ``sparsity=`` (a fraction; torch's integer counts are refused). ``prune.remove(module, name)``
and :func:`torch_slt.finalize` make the mask permanent, as for torch's methods.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from torch_slt.core.registry import get_method, list_methods
from torch_slt.core.validation import check_kwargs


def gate(module: nn.Module, name: str, method: str, *, importance_scores: Tensor | None = None,
         **kwargs: Any) -> nn.Module:
    """Gate ``module.<name>`` with ``method`` (a registered name or class) and return ``module``."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"torch_slt.prune: module must be an nn.Module, got {type(module).__name__}")
    cls = get_method(method)
    check_kwargs(cls, kwargs)
    if not isinstance(name, str) or not hasattr(module, name):  # (pruned or parametrized: apply says)
        names = ", ".join(module._parameters) or "(none)"
        raise TypeError(f"torch_slt.prune.{cls.name}: {type(module).__name__} has no parameter {name!r} "
                        f"to gate; its parameters: {names}")
    cls.apply(module, name, importance_scores=importance_scores, **kwargs)
    return module


def _twin(method: str) -> Callable[..., nn.Module]:
    def twin(module: nn.Module, name: str, *, importance_scores: Tensor | None = None,
             **kwargs: Any) -> nn.Module:
        return gate(module, name, method, importance_scores=importance_scores, **kwargs)

    cls = get_method(method)
    twin.__name__ = twin.__qualname__ = method
    twin.__doc__ = (f"Gate ``module.<name>`` with {cls.__name__} ({cls.description}) and return ``module``;"
                    f" keyword arguments as ``torch_slt.apply(model, {method!r}, ...)``. See "
                    f":mod:`torch_slt.prune`.")
    return twin


def __getattr__(attr: str) -> Callable[..., nn.Module]:
    # Resolved from the registry, so a method registered later has its twin too.
    if attr in list_methods():
        return _twin(attr)
    raise AttributeError(f"module 'torch_slt.prune' has no attribute {attr!r}; the methods are: "
                         f"{', '.join(list_methods())}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(list_methods()))
