"""Mixed precision: CPU autocast (bfloat16) and models whose weights are bfloat16 / float16."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))


def data(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 12, generator=g).to(dtype), torch.randint(0, 3, (8,), generator=g)


def test_autocast_bfloat16_trains_gates_in_float32():
    model = torch_slt.apply(mlp(), "stg", lam=0.5)
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.1)
    x, y = data()
    model.train()
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
            penalty = torch_slt.penalty(model)
        assert out.dtype == torch.bfloat16 and penalty.dtype == torch.float32
        loss = nn.functional.cross_entropy(out.float(), y) + penalty
        opt.zero_grad()
        loss.backward()
        for p in torch_slt.mask_parameters(model):
            assert p.dtype == p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
            assert p.grad.abs().sum() > 0
        opt.step()
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        model(x)
    assert all(m.weight_mask.dtype == torch.bool for _, m, _ in torch_slt.gated_tensors(model))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cast", ["before_apply", "after_apply"])
def test_half_precision_weights_keep_float32_gates(dtype, cast):
    model = mlp()
    if cast == "before_apply":
        model.to(dtype)
    torch_slt.apply(model, "stg", lam=0.5)
    if cast == "after_apply":
        model.to(dtype)                   # also casts the gates to 16 bits ...
    gates = list(torch_slt.mask_parameters(model))
    opt = torch.optim.Adam(gates, lr=1e-4)   # steps far below 16-bit resolution at mu = 0.5
    x, y = data(dtype)
    model.train()
    out = model(x)                        # ... and the first forward puts them back in float32
    assert out.dtype == dtype
    assert all(p.dtype == torch.float32 for p in gates) and gates == list(torch_slt.mask_parameters(model))
    penalty = torch_slt.penalty(model)
    assert penalty.dtype == torch.float32
    loss = nn.functional.cross_entropy(out.float(), y) + penalty
    loss.backward()
    opt.step()
    moved = max((p.detach() - 0.5).abs().max().item() for p in gates)
    assert 0 < moved < 1e-3, "a 1e-4 Adam step must survive (it would round away in 16 bits)"
    assert all(m.weight_orig.dtype == dtype for _, m, _ in torch_slt.gated_tensors(model))
    model.eval()
    with torch.no_grad():
        expected = model(x)
    torch_slt.finalize(model)
    assert all(p.dtype == dtype for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_fixed_mask_on_bfloat16_model():
    model = mlp().to(torch.bfloat16)
    torch_slt.apply(model, "magnitude", sparsity=0.5)
    x, _ = data(torch.bfloat16)
    assert model(x).dtype == torch.bfloat16
    assert torch_slt.report(model).sparsity == pytest.approx(0.5, abs=0.01)
    torch_slt.finalize(model)
    assert model[0].weight.dtype == torch.bfloat16
