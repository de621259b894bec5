"""stg (and the gate methods' shared sparsity target): lam adapted to reach a requested sparsity."""

from __future__ import annotations

import io

import pytest
import torch
from _digits import accuracy, train_gates
from torch import nn

import torch_slt


@pytest.mark.parametrize("method", ["stg", "hardconcrete"])
def test_sparsity_target_is_reached_within_one_point_on_digits(method):
    model = train_gates(method, sparsity=0.9)
    rep = torch_slt.report(model)
    assert abs(rep.sparsity - 0.9) <= 0.01, rep.sparsity
    if method == "stg":  # a ticket, not a collapsed network (chance is 0.1; measured 0.70)
        assert accuracy(model) > 0.5
    torch_slt.finalize(model)
    assert abs(torch_slt.report(model).sparsity - 0.9) <= 0.01


@pytest.mark.parametrize("method", ["stg", "hardconcrete"])
def test_target_updates_lam_only_in_training_with_grad(method):
    model = torch_slt.apply(nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 2)), method, sparsity=0.8)
    lam = lambda: [m.weight_lam[0].item() for m in model]
    assert lam() == [0.0, 0.0]  # default initial multiplier
    model.eval()
    torch_slt.penalty(model)
    model.train()
    with torch.no_grad():
        torch_slt.penalty(model)
    assert lam() == [0.0, 0.0]
    torch_slt.penalty(model).backward()   # every weight kept, target 20%: lam grows, shared by both
    first = lam()
    assert first[0] > 0 and first[0] == first[1]
    torch_slt.penalty(model)
    assert lam()[0] > first[0]


def test_lam_with_sparsity_is_the_initial_multiplier_and_state_resumes():
    model = torch_slt.apply(nn.Linear(4, 3), "stg", sparsity=0.5, lam=2.0)
    assert model.weight_lam[0].item() == 2.0
    torch_slt.penalty(model)
    assert model.weight_lam[0].item() > 2.0
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    twin = torch_slt.apply(nn.Linear(4, 3), "stg", sparsity=0.5)
    twin.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(twin.weight_lam, model.weight_lam)
    torch.testing.assert_close(torch_slt.penalty(twin), torch_slt.penalty(model))
    torch_slt.finalize(model)
    assert set(model.state_dict()) == {"weight", "bias"}


def test_fixed_lam_behaviour_is_unchanged():
    model = torch_slt.apply(nn.Linear(4, 3), "stg")
    assert not hasattr(model, "weight_lam")
    hook = next(h for _, _, h in torch_slt.gated_tensors(model))
    assert hook.lam == 0.1 and hook.sparsity_target is None
    expected = 0.1 * torch.special.ndtr(torch.tensor(0.5 / 0.5))
    torch.testing.assert_close(torch_slt.penalty(model), expected)


def test_separate_apply_calls_get_separate_multipliers():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    torch_slt.apply(model, "stg", targets=["0"], sparsity=0.5)
    torch_slt.apply(model, "stg", targets=["1"], sparsity=0.0)
    torch_slt.penalty(model)
    assert model[0].weight_lam[0] > 0 and model[1].weight_lam[0] == 0  # the second is already there


def test_bad_target_arguments_raise_and_leave_the_model_alone():
    model = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="outside"):
        torch_slt.apply(model, "stg", sparsity=1.0)
    with pytest.raises(ValueError, match="lam_lr"):
        torch_slt.apply(model, "stg", sparsity=0.5, lam_lr=0.0)
    with pytest.raises(TypeError, match="_target"):
        torch_slt.apply(model, "stg", _target=None)
    assert not torch_slt.is_gated(model)
