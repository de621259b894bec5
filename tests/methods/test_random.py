"""random: reproducible from its seed, independent of the weights and of the global RNG, uniform."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt
from _fixed import check_apply_preserves_state, check_bad_input, stateful_net
from torch_slt.core.selection import keep_count


def masks(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight_mask.clone() for _, m, _ in torch_slt.gated_tensors(model)]


def mlp(seed: int, sizes=(40, 50, 80, 25)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
    return nn.Sequential(*layers)


def test_same_seed_same_mask_whatever_the_weights_and_global_rng():
    torch.manual_seed(123)
    a = masks(torch_slt.apply(mlp(0), "random", sparsity=0.8, seed=5))
    torch.manual_seed(456)
    b = masks(torch_slt.apply(mlp(1), "random", sparsity=0.8, seed=5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = masks(torch_slt.apply(mlp(0), "random", sparsity=0.8, seed=6))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_default_seed_is_reproducible():
    a = masks(torch_slt.apply(mlp(0), "random", sparsity=0.5))
    b = masks(torch_slt.apply(mlp(0), "random", sparsity=0.5, seed=0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_global_rng_is_not_used():
    model = mlp(0)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    torch_slt.apply(model, "random", sparsity=0.5)
    assert torch.equal(torch.get_rng_state(), state)


def test_global_scope_gives_every_layer_about_the_same_density():
    model = torch_slt.apply(mlp(0, sizes=(100, 200, 100, 50)), "random", sparsity=0.8)
    kept = [int(m.weight_mask.sum()) for _, m, _ in torch_slt.gated_tensors(model)]
    sizes = [m.weight_mask.numel() for _, m, _ in torch_slt.gated_tensors(model)]
    assert sum(kept) == keep_count(sum(sizes), 0.8)  # exact overall
    for k, n in zip(kept, sizes):                       # binomial sd <= 0.006 here; 0.03 is 5 sd
        assert abs(k / n - 0.2) < 0.03, (k, n)


def test_layer_scope_is_exact_per_tensor():
    model = torch_slt.apply(mlp(0), "random", sparsity=0.7, scope="layer")
    for _, m, _ in torch_slt.gated_tensors(model):
        assert int(m.weight_mask.sum()) == keep_count(m.weight_mask.numel(), 0.7)


def test_every_position_is_equally_likely():
    # 400 seeds, 10 weights, half kept: each position is kept ~200 times (sd 10).
    counts = torch.zeros(10)
    for seed in range(400):
        layer = nn.Linear(10, 1, bias=False)
        torch_slt.get_method("random").apply(layer, "weight", sparsity=0.5, seed=seed)
        counts += layer.weight_mask.reshape(-1).float()
    assert counts.sum() == 400 * 5
    assert (counts - 200).abs().max() < 45, counts


def test_apply_leaves_everything_else_unchanged():
    check_apply_preserves_state("random", sparsity=0.5, seed=3)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"sparsity": 1.0}, ValueError, "sparsity"),
    ({"sparsity": -0.5}, ValueError, "sparsity"),
    ({}, TypeError, "sparsity is required"),
    ({"sparsity": 0.5, "seed": "a"}, TypeError, "seed"),
    ({"sparsity": 0.5, "seed": 1.5}, TypeError, "seed"),
])
def test_bad_input_raises_and_leaves_model_unchanged(kwargs, error, match):
    check_bad_input("random", stateful_net(), error, match, **kwargs)


def test_random_scores_do_not_reproduce_weights_drawn_from_the_same_seed():
    # A network drawn with normal_ from a generator seeded like the method must not get its own
    # weights back as scores (that made "random" keep exactly the largest signed weights).
    layer = torch.nn.Linear(200, 100, bias=False)
    with torch.no_grad():
        layer.weight.normal_(generator=torch.Generator().manual_seed(0))
    torch_slt.apply(layer, "random", sparsity=0.5, seed=0)
    kept = layer.weight_orig[layer.weight_mask]
    assert 0.45 < (kept > 0).float().mean().item() < 0.55
