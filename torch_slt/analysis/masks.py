"""The masks of a ticket, whatever form it comes in: a gated model (its hard masks), a finalized model
(its non-zero weights in the gated tensors), a compact ticket file, or a dict of boolean tensors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from torch_slt.core.gated import gate_history, gated_tensors, qualified_name
from torch_slt.core.errors import SLTError
from torch_slt.core.targets import is_default_target

Masks = dict[str, Tensor]


class AnalysisInputError(SLTError, TypeError, ValueError):
    """Tickets that cannot be compared (another architecture, no shared gated tensor) or an argument
    of the wrong kind; the message names the tensors or the value."""


def masks_of(ticket: Any) -> Masks:
    """``{tensor name: bool mask}`` of ``ticket`` (see the module docstring).

    For a finalized model the gated tensors come from its record (``torch_slt.finalize`` keeps it) or,
    without one, are every ``nn.Linear`` / ``nn.ConvNd`` weight; a weight that is zero in the random
    network counts as removed (with continuous random weights that has probability 0).

    Example:
        >>> import torch, torch_slt
        >>> model = torch_slt.apply(torch.nn.Linear(4, 4), "magnitude", sparsity=0.5)
        >>> {name: int(m.sum()) for name, m in masks_of(model).items()}
        {'weight': 8}
    """
    if isinstance(ticket, dict):
        return {str(k): torch.as_tensor(v).bool() for k, v in ticket.items()}
    if isinstance(ticket, (str, os.PathLike)):
        return masks_of(load_model(ticket))
    if not isinstance(ticket, nn.Module):
        raise AnalysisInputError(f"masks_of(): expected a model, a ticket path or a dict of masks, got "
                                 f"{type(ticket).__name__}")
    with torch.no_grad():
        gated = {g.qualified: g.mask.bool().cpu() for g in gated_tensors(ticket)}
        if gated:
            return gated
        params = dict(ticket.named_parameters())
        history = gate_history(ticket) or {
            qualified_name(n, "weight"): None for n, m in ticket.named_modules()
            if is_default_target(m) and isinstance(m._parameters.get("weight"), nn.Parameter)}
        return {name: (params[name].detach() != 0).cpu() for name in history if name in params}


def load_model(path: str | os.PathLike) -> nn.Module:
    """The model of a compact ticket (``*.slt.safetensors``) or of a run folder holding
    ``ticket.slt.safetensors`` (``torch-slt find``'s output)."""
    from torch_slt.experiment.ticket import load_ticket

    path = Path(path)
    if path.is_dir():
        candidate = path / "ticket.slt.safetensors"
        if not candidate.exists():
            raise FileNotFoundError(f"{path} holds no ticket.slt.safetensors; pass a ticket file or a "
                                    f"torch-slt find run folder")
        path = candidate
    model, _, _ = load_ticket(path)
    return model


def density(mask: Tensor) -> float:
    """Fraction of entries kept."""
    return float(mask.double().mean()) if mask.numel() else 0.0
