"""The sparsity target's engine: state per tensor (not per module), one sample per gate per forward."""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.base import SLTMethod


@pytest.mark.parametrize("hidden", [5, 3])
def test_a_module_with_two_gated_tensors_gets_two_masks(hidden):
    torch.manual_seed(0)
    lstm = torch_slt.apply(nn.LSTM(5, hidden), "stg", sparsity=0.5, total_steps=4)
    with torch.no_grad():   # hand-set gates: every gate of weight_ih above every gate of weight_hh
        lstm.weight_ih_l0_mu.copy_(torch.linspace(1.0, 2.0, lstm.weight_ih_l0_mu.numel()).view_as(
            lstm.weight_ih_l0_mu))
        lstm.weight_hh_l0_mu.copy_(torch.linspace(-1.0, 0.5, lstm.weight_hh_l0_mu.numel()).view_as(
            lstm.weight_hh_l0_mu))
    lstm.train()
    out, _ = lstm(torch.randn(2, 3, 5))     # different shapes (hidden 3) used to raise a size mismatch
    out.sum().backward()
    lstm.eval()
    lstm(torch.randn(2, 3, 5))
    ih, hh = lstm.weight_ih_l0_mask, lstm.weight_hh_l0_mask
    total = ih.numel() + hh.numel()
    keep = total - round(0.5 * total)
    assert int(ih.sum()) + int(hh.sum()) == keep
    assert int(ih.sum()) == min(ih.numel(), keep)          # the top gates are all weight_ih's
    rep = torch_slt.report(lstm)
    assert rep.kept == keep


def _count_samples(model: nn.Module) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for name, module, hook in torch_slt.gated_tensors(model):
        original = hook.apply_mask

        def counted(mod, _original=original, _key=f"{name}.{hook._tensor_name}"):
            counts[_key] += 1
            return _original(mod)
        hook.apply_mask = counted
    return counts


@pytest.mark.parametrize("build", [
    lambda: nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True),
    lambda: nn.MultiheadAttention(16, 2, batch_first=True),
])
@pytest.mark.parametrize("sparsity", [None, 0.5])
def test_each_gate_is_sampled_once_per_training_forward(build, sparsity):
    torch.manual_seed(0)
    kwargs = {} if sparsity is None else {"sparsity": sparsity}
    model = torch_slt.apply(build(), "stg", **kwargs)
    counts = _count_samples(model)
    x = torch.randn(2, 4, 16)
    model.train()
    out = model(x) if isinstance(model, nn.TransformerEncoderLayer) else model(x, x, x)[0]
    out.sum().backward()
    assert counts and set(counts.values()) == {1}, counts
    # every gate got its gradient through the one sample the forward used
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in torch_slt.mask_parameters(model))
    with torch.no_grad():    # the inference fast path reads the weights directly: still once each
        counts.clear()
        model.eval()
        model(x) if isinstance(model, nn.TransformerEncoderLayer) else model(x, x, x)
    assert set(counts.values()) == {1}, counts


def test_a_failed_reader_forward_does_not_leave_the_gate_stale():
    model = torch_slt.apply(nn.MultiheadAttention(8, 2), "stg")
    hook = next(h for n, m, h in torch_slt.gated_tensors(model) if n == "out_proj")
    with pytest.raises(Exception):
        model(torch.randn(2, 3, 7), torch.randn(2, 3, 7), torch.randn(2, 3, 7))   # wrong width
    assert hook._reader_depth == 0
    assert isinstance(hook, SLTMethod)


def test_optimizer_steps_on_other_parameters_do_not_move_the_schedule():
    model = torch_slt.apply(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), "stg", sparsity=0.5,
                            targets=["0"], freeze=False)
    target = next(h for _, _, h in torch_slt.gated_tensors(model)).sparsity_target
    torch.optim.SGD(model[1].parameters(), lr=0.1).step()
    assert target.step == 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()   # holds the gates among others
    assert target.step == 1


@pytest.mark.parametrize("method", ["stg", "hardconcrete", "cs"])
def test_a_layer_with_no_weight_leaves_the_penalty_that_of_the_others(method):
    # A 0-weight layer is left out of the targets (issue 20 item 12: it made the penalty 0 / 0 = NaN);
    # the penalty is that of the same model without it.
    with_empty = torch_slt.apply(nn.Sequential(nn.Linear(0, 4), nn.Linear(4, 3)), method)
    alone = torch_slt.apply(nn.Sequential(nn.Identity(), nn.Linear(4, 3)), method)
    with torch.no_grad():   # the same gate values in both
        for (_, mine), (_, theirs) in zip(alone[1].named_parameters(), with_empty[1].named_parameters()):
            mine.copy_(theirs)
    assert [g.qualified for g in torch_slt.gated_tensors(with_empty)] == ["1.weight"]
    value = torch_slt.penalty(with_empty)
    assert torch.isfinite(value) and torch.allclose(value, torch_slt.penalty(alone))
    with pytest.raises(torch_slt.NoTargetsError, match="no weight"):
        torch_slt.apply(nn.Sequential(nn.Linear(0, 4), nn.Linear(4, 0)), method)
