"""The digits example used by the sparsity-target tests: a frozen random 64-300-100-10 MLP on
scikit-learn's bundled ``load_digits`` (1797 8x8 images), gates trained with Adam."""

from __future__ import annotations

import torch
from torch import nn

import torch_slt


def digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x, dtype=torch.float32) / 16.0, torch.tensor(y, dtype=torch.long)


def digits_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


def train_gates(method: str, steps: int = 300, lr: float = 0.05, batch_size: int = 256, seed: int = 0,
                history: list | None = None, **kwargs) -> nn.Module:
    """Gate a frozen random MLP with ``method`` and train the gates; returns the gated model."""
    x, y = digits_data()
    model = torch_slt.apply(digits_mlp(seed), method, **kwargs)
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx]) + torch_slt.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if history is not None:
            history.append(torch_slt.report(model).sparsity)
    model.eval()
    return model


def accuracy(model: nn.Module) -> float:
    x, y = digits_data()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()
