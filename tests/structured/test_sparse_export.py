"""to_sparse(): CSR linear layers with the same interface and outputs; dense where not faster."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.structured.sparse_export import SparseExportError, SparseLinear


def ticket(sparsity: float) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 5, bias=False))
    return torch_slt.finalize(torch_slt.apply(net, "magnitude", sparsity=sparsity, scope="layer"))


def test_converted_layers_keep_interface_and_outputs():
    net = ticket(0.9)
    x = torch.randn(3, 7, 32)                      # extra leading dims go through unchanged
    with torch.no_grad():
        before = net(x)
    net = torch_slt.to_sparse(net, min_sparsity=0.8, check_speed=False, return_report=False)
    report = net.sparse_export_report
    assert isinstance(net[0], SparseLinear) and isinstance(net[2], SparseLinear)
    assert net[0].weight.layout == torch.sparse_csr and net[0].weight._nnz() == round(0.1 * 32 * 64)
    assert (net[0].in_features, net[0].out_features, net[2].bias) == (32, 64, None)
    assert report.converted == ["0", "2"]
    with torch.no_grad():
        torch.testing.assert_close(net(x), before)


def test_layers_below_min_sparsity_and_slower_layers_stay_dense(monkeypatch):
    net = torch_slt.to_sparse(ticket(0.5), min_sparsity=0.9, check_speed=False, return_report=False)
    report = net.sparse_export_report
    assert type(net[0]) is nn.Linear and report.layers == []
    # The speed check keeps whichever form is faster: make CSR look slow, then fast.
    import torch_slt.structured.sparse_export as se
    monkeypatch.setattr(se, "_median_ms", lambda m, x, n: 2.0 if isinstance(m, SparseLinear) else 1.0)
    net = torch_slt.to_sparse(ticket(0.95), min_sparsity=0.9, return_report=False)
    report = net.sparse_export_report
    assert type(net[0]) is nn.Linear and report.converted == [] and len(report.layers) == 2
    monkeypatch.setattr(se, "_median_ms", lambda m, x, n: 1.0 if isinstance(m, SparseLinear) else 2.0)
    net = torch_slt.to_sparse(ticket(0.95), min_sparsity=0.9, return_report=False)
    report = net.sparse_export_report
    assert isinstance(net[0], SparseLinear) and "| 0 | 95.02% | 2.000 | 1.000 | CSR |" in report.to_markdown()


def test_bad_input():
    gated = torch_slt.apply(nn.Sequential(nn.Linear(4, 4)), "magnitude", sparsity=0.5)
    with pytest.raises(SparseExportError, match="finalize"):
        torch_slt.to_sparse(gated)
    with pytest.raises(ValueError, match="min_sparsity=1.5"):
        torch_slt.to_sparse(ticket(0.5), min_sparsity=1.5)
