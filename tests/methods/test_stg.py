"""stg and the gate methods' shared sparsity target: an exact selection reached along a cubic schedule."""

from __future__ import annotations

import io

import pytest
import torch
from _digits import accuracy, train_gates
from torch import nn

import torch_slt


@pytest.mark.parametrize("method", ["stg", "hardconcrete"])
@pytest.mark.parametrize("lr", [1e-3, 5e-2])
def test_sparsity_target_is_exact_and_a_ticket_at_any_learning_rate(method, lr):
    model = train_gates(method, steps=200, lr=lr, sparsity=0.9, total_steps=200)
    rep = torch_slt.report(model)
    assert rep.kept == rep.total - round(0.9 * rep.total)   # exactly, as torch's prune rounds
    # a ticket, not a collapsed network: chance is 0.1 (measured: stg 0.77 at lr 1e-3, 0.95 at 5e-2)
    assert accuracy(model) > (0.5 if lr < 1e-2 else 0.8)
    before = [m.weight_mask.clone() for m in model if hasattr(m, "weight_mask")]
    torch_slt.finalize(model)
    after = [m.weight != 0 for m in model if isinstance(m, nn.Linear)]
    assert all(torch.equal(b, a) for b, a in zip(before, after))  # finalize bakes the same selection


def _gates(sizes=((6, 5), (5, 2))):
    return nn.Sequential(*[nn.Linear(i, o) for i, o in sizes])


def _set_scores(model, values):
    with torch.no_grad():
        for m, v in zip(model, values):
            m.weight_mu.copy_(torch.as_tensor(v, dtype=torch.float32).view_as(m.weight_mu))


def test_selection_is_global_over_the_apply_call_and_exact_on_hand_set_gates():
    model = torch_slt.apply(_gates(((3, 2), (2, 2))), "stg", sparsity=0.5)   # 6 + 4 gates, keep 5
    _set_scores(model, [[0.9, -0.2, 0.1, 0.8, 0.3, -1.0], [0.05, 0.7, -0.3, 0.2]])
    model.eval()
    model(torch.randn(1, 3))
    assert model[0].weight_mask.flatten().tolist() == [True, False, False, True, True, False]
    assert model[1].weight_mask.flatten().tolist() == [False, True, False, True]
    # the paper's rule mu > 0 would keep 7 here; the target keeps the top 5 of mu, across both layers


def test_training_forward_follows_the_cubic_schedule():
    model = torch_slt.apply(_gates(((20, 10),)), "stg", sparsity=0.8, total_steps=64, ramp=0.5)
    hook = next(h for _, _, h in torch_slt.gated_tensors(model))
    target = hook.sparsity_target
    assert target.ramp_steps == 32
    assert [round(target.sparsity_at(t), 4) for t in (0, 16, 32, 50)] == [0.0, 0.7, 0.8, 0.8]
    x = torch.randn(4, 20)
    kept = []
    for _ in range(40):
        model.train()
        model(x)
        kept.append(int(model[0].weight_mask.sum()))
        torch_slt.penalty(model).backward()   # one step of the schedule per penalty call
    assert int(model[0].weight_step[0]) == 40
    refresh = torch_slt.methods._gates.REFRESH_STEPS
    expected = [200 - round(target.sparsity_at(t // refresh * refresh) * 200) for t in range(40)]
    assert kept == expected and kept[0] == 200 and kept[-1] == 40


def test_schedule_advances_only_in_training_with_grad():
    model = torch_slt.apply(_gates(), "stg", sparsity=0.8)
    model.eval()
    torch_slt.penalty(model)
    model.train()
    with torch.no_grad():
        torch_slt.penalty(model)
    assert [int(m.weight_step[0]) for m in model] == [0, 0]
    torch_slt.penalty(model)
    assert [int(m.weight_step[0]) for m in model] == [1, 1]


def test_switched_off_gates_still_get_their_gradient():
    model = torch_slt.apply(_gates(((4, 3),)), "stg", sparsity=0.5, total_steps=2, ramp=0.5)
    model[0].weight_step[0] = 8                           # past the ramp: 6 of 12 gates are off
    torch.manual_seed(0)
    model.train()
    out = model(torch.randn(8, 4))
    off = ~model[0].weight_mask
    assert int(off.sum()) == 6
    assert torch.all(model[0].weight[off] == 0)              # the forward keeps the selection only
    out.pow(2).sum().backward()
    assert torch.count_nonzero(model[0].weight_mu.grad[off]) > 0   # straight-through to the others


def test_state_resumes_mid_schedule_from_a_state_dict():
    model = train_gates("stg", steps=30, sparsity=0.7, total_steps=100)
    assert int(model[0].weight_step[0]) == 30
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    twin = torch_slt.apply(nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                                         nn.Linear(100, 10)), "stg", sparsity=0.7, total_steps=100)
    twin.load_state_dict(torch.load(buf, weights_only=True))
    assert int(twin[0].weight_step[0]) == 30
    x = torch.randn(5, 64)
    for m in (model, twin):
        m.train()
        torch.manual_seed(1)
        m(x)
    assert all(torch.equal(a.weight_mask, b.weight_mask) for a, b in zip(model, twin) if hasattr(a, "weight_mask"))
    model.eval(), twin.eval()
    torch.testing.assert_close(model(x), twin(x), rtol=0, atol=0)
    torch_slt.finalize(model)
    assert set(model.state_dict()) == {f"{i}.{n}" for i in (0, 2, 4) for n in ("weight", "bias")}


def test_fixed_lam_behaviour_is_unchanged():
    model = torch_slt.apply(nn.Linear(4, 3), "stg")
    assert not hasattr(model, "weight_lam")
    hook = next(h for _, _, h in torch_slt.gated_tensors(model))
    assert hook.lam == 0.1 and hook.sparsity_target is None
    expected = 0.1 * torch.special.ndtr(torch.tensor(0.5 / 0.5))
    torch.testing.assert_close(torch_slt.penalty(model), expected)


def test_separate_apply_calls_get_separate_selections():
    model = _gates(((4, 4), (4, 2)))
    torch_slt.apply(model, "stg", targets=["0"], sparsity=0.5)
    torch_slt.apply(model, "stg", targets=["1"], sparsity=0.0)
    model.eval()
    model(torch.randn(1, 4))
    assert int(model[0].weight_mask.sum()) == 8 and int(model[1].weight_mask.sum()) == 8


def test_bad_target_arguments_raise_and_leave_the_model_alone():
    model = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="outside"):
        torch_slt.apply(model, "stg", sparsity=1.0)
    with pytest.raises(ValueError, match="total_steps=0 must be a positive integer"):
        torch_slt.apply(model, "stg", sparsity=0.5, total_steps=0)
    with pytest.raises(ValueError, match=r"ramp=1.5 must be a fraction in \(0, 1\]"):
        torch_slt.apply(model, "stg", sparsity=0.5, ramp=1.5)
    with pytest.raises(TypeError, match="_target"):
        torch_slt.apply(model, "stg", _target=None)
    assert not torch_slt.is_gated(model)
