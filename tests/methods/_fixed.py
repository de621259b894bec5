"""Helpers for the fixed-mask (pruning-at-initialisation) tests: a model whose forward has side effects,
and a snapshot of everything that scoring must leave as it found it."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

import torch_slt


class SideEffects(nn.Module):
    """Counts its calls in a buffer and draws from the global RNGs (torch, Python, NumPy) at every
    forward, in any mode, so that a scorer that does not restore buffers or RNG states is caught."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        random.random()
        np.random.rand()
        return x + 0.0 * torch.rand_like(x)


class StatefulNet(nn.Module):
    """Conv + BatchNorm (with running statistics) + dropout + a side-effect module + linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.side = SideEffects()
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.side(torch.relu(self.bn(self.conv(x))))
        return self.head(self.drop(x.mean(dim=(2, 3))))


def batch(n: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 5, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def stateful_net() -> StatefulNet:
    """A StatefulNet with non-trivial state: trained BN statistics, mixed train/eval submodules, a frozen
    weight, an existing ``.grad``."""
    torch.manual_seed(0)
    model = StatefulNet()
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(batch(seed=9)[0])  # moves the BN running statistics away from their init
    model.drop.eval()              # mixed modes: scoring must not flatten them
    model.conv.weight.requires_grad_(False)
    model.head.weight.grad = torch.full_like(model.head.weight, 0.25)
    return model


def _canonical(name: str) -> str:
    return name.replace("weight_orig", "weight")


def snapshot(model: nn.Module) -> dict:
    """Everything scoring must preserve (names normalised so a gated model compares to the original)."""
    return {
        "tensors": {_canonical(k): (v.dtype, v.detach().clone()) for k, v in model.state_dict().items()
                    if not k.endswith("_mask")},
        "modes": {n: m.training for n, m in model.named_modules()},
        "flags": {_canonical(n): p.requires_grad for n, p in model.named_parameters()},
        "grads": {_canonical(n): (p.grad, None if p.grad is None else p.grad.clone())
                  for n, p in model.named_parameters()},
        "torch_rng": torch.get_rng_state(),
        "py_rng": random.getstate(),
        "np_rng": np.random.get_state()[1].copy(),
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["tensors"].keys() == before["tensors"].keys()
    for key, (dtype, value) in before["tensors"].items():
        assert after["tensors"][key][0] == dtype, key
        assert torch.equal(after["tensors"][key][1], value), f"{key} changed"
    assert after["modes"] == before["modes"]
    assert after["flags"] == before["flags"]
    for key, (obj, value) in before["grads"].items():
        got_obj, got_value = after["grads"][key]
        assert got_obj is obj, f".grad of {key} replaced"
        if value is not None:
            assert torch.equal(got_value, value), f".grad of {key} changed"
    assert torch.equal(after["torch_rng"], before["torch_rng"]), "global torch RNG state changed"
    assert after["py_rng"] == before["py_rng"], "Python random state changed"
    assert (after["np_rng"] == before["np_rng"]).all(), "NumPy random state changed"


def check_apply_preserves_state(method: str, **kwargs) -> nn.Module:
    """``apply`` on :func:`stateful_net` gates it and changes nothing else (freeze=False default)."""
    model = stateful_net()
    before = snapshot(model)
    torch_slt.apply(model, method, **kwargs)
    assert torch_slt.is_gated(model)
    assert_unchanged(model, before)
    return model


def check_bad_input(method: str, model: nn.Module, error: type, match: str, **kwargs) -> None:
    """``apply`` raises ``error`` matching ``match`` and leaves ``model`` exactly as it was."""
    before = snapshot(model)
    with pytest.raises(error, match=match):
        torch_slt.apply(model, method, **kwargs)
    assert not torch_slt.is_gated(model)
    assert_unchanged(model, before)
