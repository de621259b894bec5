"""``warn_if_gates_not_optimized``: an optimizer that misses the gates is said at its first step
(issue 22, item 5), not only at ``finalize``. Called directly here; ``penalty`` calls it in training."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core import health
from torch_slt.core.health import warn_if_gates_not_optimized


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _steps(model, optimizer, n, accumulate=1):
    """A plain loop: the check is called where penalty() would call it. Returns the warnings."""
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    model.train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(n):
            for _ in range(accumulate):
                warn_if_gates_not_optimized(model)
                loss = nn.functional.cross_entropy(model(x), y) + torch_slt.penalty(model)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return [str(w.message) for w in caught if "torch_slt:" in str(w.message)]


def test_an_optimizer_built_before_apply_is_said_at_the_first_step_once():
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)     # before apply: holds the weights
    torch_slt.apply(model, "stg", lam=0.1)
    said = _steps(model, optimizer, 4)
    assert len(said) == 1
    assert "holds 2 of the 2 gate tensors not (0.weight_mu, 2.weight_mu)" in said[0]
    assert "after torch_slt.apply, over torch_slt.mask_parameters(model)" in said[0]
    assert not health._WATCHED and not health._HOOK      # the global hook is gone


def test_an_optimizer_over_the_gates_is_not_reported():
    model = torch_slt.apply(_mlp(), "stg", lam=0.1)
    assert _steps(model, torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.05), 3) == []
    assert not health._WATCHED and not health._HOOK


def test_gradient_accumulation_waits_for_the_step():
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch_slt.apply(model, "stg", lam=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):  # three micro-batches, no step yet: nothing to say
            assert warn_if_gates_not_optimized(model) is False
            nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    with pytest.warns(UserWarning, match="holds 2 of the 2 gate tensors not"):
        assert warn_if_gates_not_optimized(model) is True


def test_gates_without_gradient_at_the_step_are_said():
    model = torch_slt.apply(_mlp(), "stg", lam=0.1)
    optimizer = torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.05)
    extra = nn.Parameter(torch.zeros(()))
    optimizer.add_param_group({"params": [extra]})
    warn_if_gates_not_optimized(model)
    (extra * 2).backward()          # the loss does not reach the gates
    optimizer.step()
    with pytest.warns(UserWarning, match="had no gradient when it stepped"):
        assert warn_if_gates_not_optimized(model)


def test_another_models_optimizer_and_eval_mode_are_ignored():
    model = _mlp()
    torch_slt.apply(model, "stg", lam=0.1)
    other = nn.Linear(3, 3)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1)
    warn_if_gates_not_optimized(model)
    other(torch.randn(2, 3)).sum().backward()
    other_opt.step()                                      # not model's optimizer: no check yet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_gates_not_optimized(model) is False
        model.eval()
        assert warn_if_gates_not_optimized(model) is False
    health._unwatch(id(model))
