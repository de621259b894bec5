"""stg computes its penalty term inside the gate's autograd node; these pin down when that term is used.

The fused path (the term computed by the last train-mode forward) and the plain path (Phi(mu / sigma)
summed afresh) must give the same penalty and the same gradients, and every way of calling
``penalty`` out of the usual order must fall back to the plain path instead of failing.
"""

from __future__ import annotations

import copy
import pickle

import torch
import torch.nn.functional as F

import torch_slt


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.ReLU(), torch.nn.Linear(9, 4))
    torch_slt.apply(model, "stg", lam=0.3)
    with torch.no_grad():
        for p in torch_slt.mask_parameters(model):
            p.uniform_(-0.6, 1.4)  # gates inside (0, 1), clamped at 0 and clamped at 1
    return model


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in torch_slt.mask_parameters(model)]


def test_fused_penalty_equals_fresh_penalty_value_and_gradients():
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    fused, fresh = _model(), _model()
    torch.manual_seed(7)
    out = fused(x)
    hooks = [hook for _, _, hook in torch_slt.gated_tensors(fused)]
    assert all("_pending_kept" in h.__dict__ for h in hooks)  # the forward left its terms
    loss_fused = F.cross_entropy(out, y) + torch_slt.penalty(fused)
    assert torch.allclose(torch_slt.penalty(fused), loss_fused - F.cross_entropy(out, y), rtol=0, atol=1e-6)
    torch.manual_seed(7)
    out = fresh(x)
    for _, module, hook in torch_slt.gated_tensors(fresh):
        hook.__dict__.pop("_pending_kept")  # force the plain path
    loss_fresh = F.cross_entropy(out, y) + torch_slt.penalty(fresh)
    assert torch.allclose(loss_fused, loss_fresh, rtol=0, atol=1e-6)
    loss_fused.backward()
    loss_fresh.backward()
    for a, b in zip(_grads(fused), _grads(fresh)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_penalty_gradient_is_the_gaussian_density():
    model = _model()
    model(torch.randn(3, 6))  # leaves a pending term
    torch_slt.penalty(model).backward()
    total = sum(p.numel() for p in torch_slt.mask_parameters(model))
    for _, module, hook in torch_slt.gated_tensors(model):
        mu = module.weight_mu.detach()
        expected = 0.3 / total * torch.exp(-mu**2 / (2 * 0.25)) / (0.5 * (2 * torch.pi) ** 0.5)
        assert torch.allclose(module.weight_mu.grad, expected, rtol=1e-5, atol=1e-9)


def test_penalty_after_the_loss_backward_falls_back():
    model = _model()
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    F.cross_entropy(model(x), y).backward()
    torch_slt.penalty(model).backward()  # the forward's graph is gone: must not raise
    assert all(p.grad is not None for p in torch_slt.mask_parameters(model))


def test_penalty_after_an_optimizer_step_and_twice_per_forward():
    model = _model()
    opt = torch.optim.SGD(torch_slt.mask_parameters(model), lr=0.1)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    out = model(x)
    opt.step()  # mu changed in place after the forward: the pending term is stale
    for p in torch_slt.mask_parameters(model):
        p.grad = None
    first, second = torch_slt.penalty(model), torch_slt.penalty(model)
    assert torch.allclose(first, second)
    (F.cross_entropy(out, y) + first + second).backward()


def test_pending_term_does_not_block_deepcopy_pickle_or_no_grad():
    model = _model()
    model(torch.randn(2, 6))
    copy.deepcopy(model)
    pickle.loads(pickle.dumps(model))
    with torch.no_grad():
        value = torch_slt.penalty(model)
    assert value.grad_fn is None and value > 0
