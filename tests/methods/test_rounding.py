"""How many weights a fixed-mask method removes: round(s n) (torch) or floor(s n) (the references)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.selection import keep_count


def _layer(values: list[float]) -> nn.Linear:
    layer = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))
    return layer


@pytest.mark.parametrize("total, sparsity, torch_kept, floor_kept", [
    (5, 0.3, 3, 4),      # 1.5 removed: round -> 2 (half to even), floor -> 1
    (5, 0.7, 1, 2),      # 3.5: round -> 4, floor -> 3
    (10, 0.95, 0, 1),    # 9.5: round -> 10 (even), floor -> 9
    (100, 0.29, 71, 71),  # 0.29 * 100 = 28.999999999999996 in floats: floor still removes 29
    (7, 0.9, 1, 1),      # 6.3: both remove 6
])
def test_keep_count_by_hand(total, sparsity, torch_kept, floor_kept):
    assert keep_count(total, sparsity) == torch_kept
    assert keep_count(total, sparsity, "torch") == torch_kept
    assert keep_count(total, sparsity, "floor") == floor_kept


def test_keep_count_refuses_an_unknown_rounding():
    with pytest.raises(ValueError, match="rounding='ceil'"):
        keep_count(10, 0.5, "ceil")


def test_magnitude_floor_keeps_one_more_weight_than_torch_at_a_half():
    values = [0.1, -0.2, 0.3, -0.4, 0.5]
    torch_rule = torch_slt.apply(_layer(values), "magnitude", sparsity=0.7)
    floor_rule = torch_slt.apply(_layer(values), "magnitude", sparsity=0.7, rounding="floor")
    assert torch_rule.weight_mask.tolist() == [[False, False, False, False, True]]
    assert floor_rule.weight_mask.tolist() == [[False, False, False, True, True]]


def test_floor_rounding_counts_per_tensor_with_layer_scope_and_jointly_with_global():
    model = nn.Sequential(_layer([1.0, 2.0, 3.0, 4.0, 5.0]), _layer([6.0, 7.0, 8.0, 9.0, 10.0]))
    layer = torch_slt.apply(model, "magnitude", sparsity=0.3, scope="layer", rounding="floor")
    assert [int(m.weight_mask.sum()) for m in layer] == [4, 4]          # floor(1.5) = 1 removed per tensor
    model = nn.Sequential(_layer([1.0, 2.0, 3.0, 4.0, 5.0]), _layer([6.0, 7.0, 8.0, 9.0, 10.0]))
    joint = torch_slt.apply(model, "magnitude", sparsity=0.35, rounding="floor")
    assert torch_slt.report(joint).kept == 7                             # floor(3.5) = 3 of 10 removed
    assert joint[0].weight_mask.tolist() == [[False, False, False, True, True]]


@pytest.mark.parametrize("method, extra", [("random", {}), ("synflow", {"iterations": 3, "input_shape": (5,)}),
                                           ("snip", "data"), ("grasp", "data")])
def test_every_fixed_mask_method_takes_floor(method, extra):
    torch.manual_seed(0)
    kwargs = {"data": (torch.randn(8, 5), torch.randint(0, 2, (8,)))} if extra == "data" else dict(extra)
    kept = {}
    for rounding in ("torch", "floor"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))  # 20 + 8 = 28 weights
        model = torch_slt.apply(model, method, sparsity=0.125, rounding=rounding, **kwargs)
        kept[rounding] = torch_slt.report(model).kept
    assert kept == {"torch": 24, "floor": 25}         # 3.5 removed: round -> 4 (half to even), floor -> 3


def test_rounding_is_checked_and_recorded():
    with pytest.raises(ValueError, match="rounding='int'"):
        torch_slt.apply(nn.Linear(3, 3), "magnitude", sparsity=0.5, rounding="int")
    with pytest.raises(ValueError, match="granularity='neuron'"):
        torch_slt.apply(nn.Linear(3, 3), "magnitude", sparsity=0.5, rounding="floor", granularity="neuron")
    from torch_slt.core.metadata import describe

    model = torch_slt.apply(nn.Linear(3, 3), "magnitude", sparsity=0.5, rounding="floor")
    hook = next(h for h in model._forward_pre_hooks.values())
    assert describe(hook)["config"]["rounding"] == "floor"
