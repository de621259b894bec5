"""``to_sparse``: store the weights of very sparse linear layers in CSR, where that is faster.

An unstructured ticket keeps the dense shape, so it runs exactly as fast as the dense network. Above
some sparsity a compressed-sparse-row weight and a sparse x dense product (MKL's on CPU) beat the dense
``F.linear``: on one CPU thread, for a 4096x4096 layer, CSR is slower at 50% sparsity, about even around
85-90% at batch 1 and 3-4x faster at 95% (``bench/sparse_export.py``, ``docs/sparse_export.md``). The
crossover depends on the layer's shape, the batch size and the machine, so :func:`to_sparse` times
both forms of each candidate layer on the current device and keeps the faster one.

Only ``nn.Linear`` layers are converted (torch has no sparse convolution on CPU); the replacement,
:class:`SparseLinear`, has the same ``in_features``/``out_features``/``bias`` and input/output shapes.
It is for inference: its weight is a buffer, not a Parameter.

Example:
    >>> import torch, torch_slt
    >>> net = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4))
    >>> net = torch_slt.finalize(torch_slt.apply(net, "magnitude", sparsity=0.97, targets="0"))
    >>> net = torch_slt.to_sparse(net, min_sparsity=0.9, check_speed=False, return_report=False)
    >>> type(net[0]).__name__, net.sparse_export_report.converted
    ('SparseLinear', ['0'])
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from torch_slt.core.api import is_gated
from torch_slt.core.errors import SLTError
from torch_slt.structured._returns import check_return_report, returned


class SparseExportError(SLTError, ValueError):
    """``to_sparse`` got a gated model or a bad argument."""


class SparseLinear(nn.Module):
    """``nn.Linear`` whose weight is a sparse CSR tensor (inference only)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with warnings.catch_warnings():   # "sparse CSR support is in beta": known, and what we want
            warnings.simplefilter("ignore", UserWarning)
            self.register_buffer("weight", linear.weight.detach().to_sparse_csr())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        out = (self.weight @ flat.T).T          # CSR x dense: the sparse kernel
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        nnz = self.weight._nnz()
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, density={nnz / (self.in_features * self.out_features):.4f}")


@dataclass
class LayerDecision:
    name: str
    sparsity: float
    dense_ms: float | None
    sparse_ms: float | None
    sparse: bool


@dataclass
class SparseExportReport:
    """Per candidate layer: its sparsity, both timings (when measured) and the form kept."""

    layers: list[LayerDecision] = field(default_factory=list)

    @property
    def converted(self) -> list[str]:
        return [d.name for d in self.layers if d.sparse]

    def to_markdown(self) -> str:
        lines = ["| layer | sparsity | dense ms | CSR ms | kept |", "|---|---:|---:|---:|---|"]
        for d in self.layers:
            dense = "-" if d.dense_ms is None else f"{d.dense_ms:.3f}"
            sparse = "-" if d.sparse_ms is None else f"{d.sparse_ms:.3f}"
            lines.append(f"| {d.name} | {d.sparsity:.2%} | {dense} | {sparse} | "
                         f"{'CSR' if d.sparse else 'dense'} |")
        return "\n".join(lines)


def to_sparse(model: nn.Module, min_sparsity: float = 0.9, *, batch_size: int = 1,
              check_speed: bool = True, repeats: int = 5, return_report: bool | None = None) -> nn.Module:
    """Replace, in place, the finalized ``nn.Linear`` layers at least ``min_sparsity`` sparse by
    :class:`SparseLinear` where that is faster; return ``model`` (its :class:`SparseExportReport` is
    ``model.sparse_export_report``).

    Args:
        model: a finalized model (no gates).
        min_sparsity: fraction of zero weights a layer needs to be a candidate.
        batch_size: rows of the random input each candidate is timed on (the batch you will serve).
        check_speed: time dense and CSR forms and keep the faster (default); ``False`` converts every
            candidate.
        repeats: timed calls per form (the median is used).
        return_report: ``False`` returns the model; ``True`` the pair ``(model, report)``; left out, the
            pair with a ``FutureWarning`` (the 0.1 shape, kept for one release).
    """
    check_return_report(return_report, "to_sparse()")
    if is_gated(model):
        raise SparseExportError("to_sparse(): the model still carries gates; call torch_slt.finalize first")
    if not 0.0 <= float(min_sparsity) < 1.0:
        raise SparseExportError(f"to_sparse(): min_sparsity={min_sparsity!r} must be in [0, 1)")
    if int(batch_size) < 1:
        raise SparseExportError(f"to_sparse(): batch_size={batch_size!r} must be >= 1")
    report = SparseExportReport()
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            weight = child.weight.detach()
            sparsity = 1.0 - torch.count_nonzero(weight).item() / weight.numel()
            if sparsity < min_sparsity:
                continue
            candidate = SparseLinear(child)
            dense_ms = sparse_ms = None
            faster = True
            if check_speed:
                x = torch.randn(batch_size, child.in_features, dtype=weight.dtype, device=weight.device)
                dense_ms = _median_ms(child, x, repeats)
                sparse_ms = _median_ms(candidate, x, repeats)
                faster = sparse_ms < dense_ms
            if faster:
                setattr(parent, child_name, candidate)
            report.layers.append(LayerDecision(name, sparsity, dense_ms, sparse_ms, faster))
    return returned(model, report, "sparse_export_report", return_report, "to_sparse()")


def _median_ms(module: nn.Module, x: Tensor, repeats: int) -> float:
    times = []
    with torch.no_grad():
        module(x)                                   # warm-up (allocations, MKL handles)
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            module(x)
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return times[len(times) // 2]
