"""Sparsity reports: overall and per gated tensor, before and after finalize."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from torch_slt.core.formulation import formulation
from torch_slt.core.gated import gate_formulations, gate_history, gated_tensors, qualified_name
from torch_slt.core.targets import is_default_target


@dataclass(frozen=True)
class LayerSparsity:
    """One gated tensor: ``kept`` of ``total`` weights survive the hard mask. ``formulation`` says which
    form of ``method`` made it (:mod:`torch_slt.core.formulation`), e.g. ``"stg (paper: lam=0.1)"``."""

    name: str
    shape: tuple[int, ...]
    kept: int
    total: int
    method: str | None
    formulation: str | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of the tensor's weights removed."""
        return 1.0 - self.kept / self.total if self.total else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """The hard-mask sparsity of a model: ``sparsity`` is the fraction of gated weights removed."""

    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return sum(r.kept for r in self.layers)

    @property
    def total(self) -> int:
        return sum(r.total for r in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.total if self.total else 0.0

    @property
    def formulation(self) -> str | None:
        """The formulation labels of the tensors, distinct, in order, joined by ``"; "`` (None: unknown)."""
        labels = list(dict.fromkeys(r.formulation for r in self.layers if r.formulation))
        return "; ".join(labels) or None

    def to_dict(self) -> dict:
        """JSON-ready: overall numbers and one dict per tensor."""
        return {
            "sparsity": self.sparsity, "kept": self.kept, "total": self.total, "formulation": self.formulation,
            "layers": [{**asdict(r), "shape": list(r.shape), "sparsity": r.sparsity} for r in self.layers],
        }

    def to_markdown(self) -> str:
        """A markdown table, one row per tensor plus a total row."""
        lines = ["| tensor | shape | method | kept | total | sparsity |", "|---|---|---|---:|---:|---:|"]
        for r in self.layers:
            shape = "x".join(map(str, r.shape))
            lines.append(f"| {r.name} | {shape} | {r.method or '-'} | {r.kept} | {r.total} "
                         f"| {r.sparsity:.2%} |")
        lines.append(f"| **total** | | | {self.kept} | {self.total} | {self.sparsity:.2%} |")
        if self.formulation:
            lines = [f"Formulation: {self.formulation}", ""] + lines
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def report(model: nn.Module) -> SparsityReport:
    """Sparsity of ``model``'s hard masks, overall and per gated tensor.

    On a gated model the rows come from the hard masks. After :func:`~torch_slt.finalize` (or on a
    model that loaded a finalized ticket) they count the zeros of the tensors that were gated, or of
    every default target layer's weight when the model carries no record.

    Example:
        >>> import torch, torch_slt
        >>> model = torch_slt.apply(torch.nn.Linear(10, 10), "magnitude", sparsity=0.3)
        >>> round(torch_slt.report(model).sparsity, 2)
        0.3
    """
    rows = []
    with torch.no_grad():
        for module_name, module, hook in gated_tensors(model):
            mask = hook.hard_mask(module)
            rows.append(LayerSparsity(qualified_name(module_name, hook._tensor_name), tuple(mask.shape),
                                      int(mask.sum()), mask.numel(), type(hook).name, formulation(hook)))
        if rows:
            _warn_if_not_finite(model)
            if not any(m.training for _, m, _ in gated_tensors(model)):  # not while training runs
                from torch_slt.core.health import warn_about_ticket

                warn_about_ticket(model, "report()")
            return SparsityReport(rows)
        params = dict(model.named_parameters())
        labels = gate_formulations(model)
        history = gate_history(model) or {
            qualified_name(n, "weight"): None for n, m in model.named_modules()
            if is_default_target(m) and isinstance(m._parameters.get("weight"), nn.Parameter)}
        for name, method in history.items():
            if name in params:
                weight = params[name]
                rows.append(LayerSparsity(name, tuple(weight.shape), int(torch.count_nonzero(weight)),
                                          weight.numel(), method, labels.get(name)))
    return SparsityReport(rows)


def _warn_if_not_finite(model: nn.Module) -> None:
    """NaN gates read as pruned, so the numbers above would look normal: say so (finalize refuses)."""
    from torch_slt.core import finite, health

    names = health.nonfinite_gates(model)
    if names:
        warnings.warn(finite.message(names, "report()") + " finalize() refuses such a model.",
                      RuntimeWarning, stacklevel=3)
