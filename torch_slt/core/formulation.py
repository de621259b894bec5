"""Which formulation of a method made a ticket: the paper's, or torch_slt's own variant of it.

The gate methods (``stg``, ``hardconcrete``) run in two formulations that share a name but not a
method. ``lam=`` alone is the paper's: a penalty on the expected number of open gates, the hard mask
``P(z != 0) > 0.5`` (``mu > 0`` for stg), no straight-through estimator, and whatever sparsity that
penalty gives. ``sparsity=`` is torch_slt's hybrid: the same gates and penalty, plus an exact top-k
selection over the whole model, a straight-through gradient and a cubic sparsity ramp, so that the
ticket has exactly the sparsity asked for. Reports, sweeps and saved tickets carry the label this
module computes from a gate's settings, so a number is never quoted under the bare name ``stg``.

Example:
    >>> import torch, torch_slt
    >>> layer = torch_slt.apply(torch.nn.Linear(4, 4), "stg", lam=0.1)
    >>> hook = next(iter(layer._forward_pre_hooks.values()))
    >>> formulation(hook)
    'stg (paper: lam=0.1)'
    >>> formulation_of("stg", {"sparsity": 0.9, "lam": 8.1})
    'stg + exact target (torch_slt)'
    >>> formulation_of("stg", {"sparsity": 0.9, "lam": 8.1}, detail=True)
    'stg + exact target (torch_slt: sparsity=0.9, lam=8.1)'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch_slt.core.metadata import method_config

#: The methods with the two formulations (``lam=`` alone, or a ``sparsity=`` target).
GATE_METHODS = ("stg", "hardconcrete")
_FIXED = ("magnitude", "random", "snip", "grasp", "synflow")


def formulation(hook: Any, detail: bool = False) -> str:
    """The formulation label of one gate (a torch_slt method instance), from its settings.

    ``detail=False`` names the formulation and, for the paper's, its ``lam`` (the knob that sets the
    sparsity there); ``detail=True`` adds the other settings that define it (the target's sparsity).
    """
    return formulation_of(type(hook).name or type(hook).__name__, method_config(hook), detail=detail)


def formulation_of(method: str | None, config: Mapping[str, Any], detail: bool = False) -> str:
    """The label of ``method`` with constructor settings ``config`` (e.g. a ticket's saved
    ``{"method": ..., "config": ...}``, or the keyword arguments given to ``apply``). Settings missing
    from ``config`` take the method's defaults. ``method=None`` or ``"dense"`` is the dense baseline."""
    if method in (None, "dense"):
        return "dense (every weight trained)"
    if method in GATE_METHODS:
        return _gate_label(method, config, detail)
    if method == "edgepopup":
        scope = config.get("scope", "layer")
        return "edgepopup (paper: top-k per layer)" if scope == "layer" else "edgepopup (global top-k, torch_slt)"
    if method == "cs":
        return f"cs (paper: lam={_num(_given(config, 'lam', 1e-2))})"
    if method == "supermask":
        evaluation = "sampled" if config.get("eval_mode") == "sample" else "hard"
        return f"supermask (paper: Bernoulli samples, {evaluation} eval mask)"
    if method in _FIXED:
        parts = [str(config.get("scope", "global"))]
        if config.get("rounding", "torch") == "floor":
            parts.append("floor count")
        if method == "grasp" and config.get("mode", "eval") == "train":
            parts.append("train mode")
        return f"{method} ({', '.join(parts)})"
    return str(method)


def formulation_family(label: str) -> str:
    """``label`` without its settings, for one curve per formulation in a plot: ``"stg (paper: lam=0.1)"``
    -> ``"stg (paper)"``; labels without settings are returned as they are.

    Example:
        >>> formulation_family("stg (paper: lam=0.1)"), formulation_family("stg + exact target (torch_slt)")
        ('stg (paper)', 'stg + exact target (torch_slt)')
    """
    return re.sub(r"\((\w+): [^)]*\)", r"(\1)", label)


def _gate_label(method: str, config: Mapping[str, Any], detail: bool) -> str:
    extra = []
    granularity = config.get("granularity", "weight")
    if granularity != "weight":
        extra.append(f"per {granularity}")
    sparsity = config.get("sparsity", config.get("amount"))
    if sparsity is not None:
        settings = [f"sparsity={_num(sparsity)}"] if detail else []
        if detail and config.get("lam") is not None:
            settings.append(f"lam={_num(config['lam'])}")
        inner = ": " + ", ".join(settings + extra) if settings + extra else ""
        return f"{method} + exact target (torch_slt{inner})"
    settings = [f"lam={_num(_given(config, 'lam', 0.1))}"]
    if _given(config, "threshold", 0.5) != 0.5:
        settings.append(f"threshold={_num(config['threshold'])}")
    if config.get("mask_rule", "probability") == "reference":
        settings.append("reference test gate")
    return f"{method} (paper: {', '.join(settings + extra)})"


def _given(config: Mapping[str, Any], key: str, default: Any) -> Any:
    """``config[key]``, or ``default`` when it is missing or None (None means "the default" in kwargs)."""
    value = config.get(key)
    return default if value is None else value


def _num(value: Any) -> str:
    return f"{float(value):.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
