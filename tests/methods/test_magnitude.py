"""magnitude: exact masks on hand-set weights, global and per layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt
from _fixed import check_apply_preserves_state, check_bad_input, stateful_net
from torch_slt.core.selection import keep_count


def two_layers() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -0.9, 0.3], [-0.5, 0.05, 0.7]]))
        model[1].weight.copy_(torch.tensor([[0.2, -0.8], [0.6, -0.01]]))
    return model


def test_global_mask_keeps_largest_absolute_values_across_layers():
    model = torch_slt.apply(two_layers(), "magnitude", sparsity=0.6)  # 10 weights, 4 kept
    # |w| ranked over both layers: 0.9, 0.8, 0.7, 0.6 are kept.
    assert model[0].weight_mask.tolist() == [[False, True, False], [False, False, True]]
    assert model[1].weight_mask.tolist() == [[False, True], [True, False]]


def test_layer_mask_keeps_largest_absolute_values_per_tensor():
    model = torch_slt.apply(two_layers(), "magnitude", sparsity=0.5, scope="layer")
    # layer 0: 6 weights, 3 kept (0.9, 0.7, 0.5); layer 1: 4 weights, 2 kept (0.8, 0.6).
    assert model[0].weight_mask.tolist() == [[False, True, False], [True, False, True]]
    assert model[1].weight_mask.tolist() == [[False, True], [True, False]]


def test_global_scope_is_the_default_and_differs_from_layer_scope():
    glob = torch_slt.apply(two_layers(), "magnitude", sparsity=0.7)   # 3 kept: 0.9, 0.8, 0.7
    assert glob[0].weight_mask.sum() == 2 and glob[1].weight_mask.sum() == 1
    layer = torch_slt.apply(two_layers(), "magnitude", sparsity=0.7, scope="layer")
    assert layer[0].weight_mask.sum() == keep_count(6, 0.7) == 2
    assert layer[1].weight_mask.sum() == keep_count(4, 0.7) == 1


def test_effective_weight_is_masked_and_finalize_bakes_it():
    model = torch_slt.apply(two_layers(), "magnitude", sparsity=0.6)
    expected = torch.tensor([[0.0, -0.9, 0.0], [0.0, 0.0, 0.7]])
    torch.testing.assert_close(model[0].weight, expected)
    torch_slt.finalize(model)
    torch.testing.assert_close(model[0].weight.detach(), expected)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.0, 0.33, 0.5, 0.9, 0.999])
def test_exact_count_with_ties(scope, sparsity):
    model = nn.Sequential(nn.Linear(7, 5), nn.Linear(5, 3))
    with torch.no_grad():
        for layer in model:
            layer.weight.fill_(0.5)  # every score tied
    torch_slt.apply(model, "magnitude", sparsity=sparsity, scope=scope)
    kept = [int(layer.weight_mask.sum()) for layer in model]
    if scope == "global":
        assert sum(kept) == keep_count(35 + 15, sparsity)
    else:
        assert kept == [keep_count(35, sparsity), keep_count(15, sparsity)]


def test_single_module_torch_style():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -3.0, 0.2, 2.0]]))
    torch_slt.get_method("magnitude").apply(layer, "weight", sparsity=0.25)
    assert layer.weight_mask.tolist() == [[False, True, True, True]]


def test_apply_leaves_everything_else_unchanged():
    model = check_apply_preserves_state("magnitude", sparsity=0.5)
    assert model.conv.weight_orig.requires_grad is False  # freeze defaults to False: flags as they were
    assert model.head.weight_orig.requires_grad and model.head.bias.requires_grad


@pytest.mark.parametrize("sparsity,error", [(1.0, ValueError), (-0.1, ValueError), (1.5, ValueError),
                                            (None, TypeError), ("0.5", TypeError)])
def test_bad_sparsity_raises_and_leaves_model_unchanged(sparsity, error):
    check_bad_input("magnitude", stateful_net(), error, "sparsity", sparsity=sparsity)


def test_bad_scope_raises():
    check_bad_input("magnitude", stateful_net(), ValueError, "scope", sparsity=0.5, scope="tensor")


def test_freeze_true_makes_a_strong_ticket_baseline():
    model = torch_slt.apply(stateful_net(), "magnitude", sparsity=0.5, freeze=True)
    assert not any(p.requires_grad for p in model.parameters())  # frozen random weights, fixed mask
    torch_slt.finalize(model)
    assert model.head.weight.requires_grad and not model.conv.weight.requires_grad  # flags restored
