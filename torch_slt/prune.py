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

Freezing is the one deliberate difference from :func:`torch_slt.apply`: ``apply`` builds a strong ticket
of a whole model and so freezes every other parameter by default; a twin, like
``torch.nn.utils.prune.l1_unstructured``, changes nothing but the tensor it gates.

The twins are real functions, made once when this module is imported (and on first access for a method
registered later): each has its method's keywords as its signature (``inspect.signature``, ``help()``)
and its method's docstring, and ``torch_slt.prune.stg is torch_slt.prune.stg``.
"""

from __future__ import annotations

import inspect
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
    """The functional twin of ``method``: a function with the method's keywords as its signature."""
    cls = get_method(method)

    def twin(module: nn.Module, name: str, *, importance_scores: Tensor | None = None,
             **kwargs: Any) -> nn.Module:
        return gate(module, name, method, importance_scores=importance_scores, **kwargs)

    twin.__name__ = twin.__qualname__ = method
    twin.__module__ = __name__
    twin.__signature__ = _signature(cls)
    twin.__doc__ = (f"Gate ``module.<name>`` with ``{method}`` ({cls.description or cls.__name__}) in place "
                    f"and return ``module``: ``torch_slt.apply(model, {method!r}, ...)`` on one tensor of "
                    f"one module, freezing nothing. See :mod:`torch_slt.prune`.\n\n"
                    f"{cls.__name__}: {inspect.cleandoc(cls.__doc__ or '')}")
    return twin


def _signature(cls: type) -> inspect.Signature:
    """``(module, name, *, importance_scores=None, <the method's public keywords>) -> nn.Module``."""
    P = inspect.Parameter
    params = [P("module", P.POSITIONAL_OR_KEYWORD, annotation=nn.Module),
              P("name", P.POSITIONAL_OR_KEYWORD, annotation=str),
              P("importance_scores", P.KEYWORD_ONLY, default=None, annotation="Tensor | None")]
    for pname, param in inspect.signature(cls.__init__).parameters.items():
        if pname == "self" or pname.startswith("_") or param.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
            continue                                        # underscore names are internal (plan())
        params.append(param.replace(kind=P.KEYWORD_ONLY))
    return inspect.Signature(params, return_annotation=nn.Module)


def _install_twins() -> None:
    """One twin per method registered so far, made once (``prune.stg is prune.stg``)."""
    for method in list_methods():
        if method not in globals():
            globals()[method] = _twin(method)


_install_twins()


def __getattr__(attr: str) -> Callable[..., nn.Module]:
    # A method registered after this module was imported: make its twin once, then keep it.
    if attr in list_methods():
        globals()[attr] = _twin(attr)
        return globals()[attr]
    raise AttributeError(f"module 'torch_slt.prune' has no attribute {attr!r}; the methods are: "
                         f"{', '.join(list_methods())}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(list_methods()))
