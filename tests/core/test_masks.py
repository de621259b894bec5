"""Masks as data: apply given masks, narrow a fixed mask in place, take gates off unmasked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.masks import MaskError, apply_masks, hard_masks, narrow_masks, remove_gates


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_apply_masks_gates_exactly_the_given_masks_and_round_trips_a_checkpoint():
    net = _net()
    mask = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]])
    apply_masks(net, {"0.weight": mask}, "magnitude", sparsity=0.5)
    assert torch.equal(hard_masks(net)["0.weight"], mask.bool())
    assert torch_slt.report(net).layers[0].method == "magnitude"
    assert net[0].weight_orig.requires_grad          # weights stay trainable (a weak ticket)
    x = torch.randn(5, 3)
    fresh = _net()
    torch_slt.load_state_dict(fresh, net.state_dict())
    torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("masks,match", [
    ({"0.wieght": torch.ones(4, 3)}, "'0.wieght'.*no such parameter"),
    ({"0.weight": torch.ones(3, 4)}, r"shape \(3, 4\), the parameter has \(4, 3\)"),
    ({"0.weight": torch.full((4, 3), 0.5)}, "only 0 and 1"),
    ({"0.weight": [[1, 0, 1]]}, "must be a torch.Tensor"),
])
def test_bad_masks_are_refused_and_the_model_is_unchanged(masks, match):
    net = _net()
    before = _state(net)
    with pytest.raises(MaskError, match=match):
        apply_masks(net, masks)
    assert not torch_slt.is_gated(net) and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_apply_masks_refuses_a_learned_method():
    with pytest.raises(MaskError, match="method='stg' learns its mask"):
        apply_masks(_net(), {"0.weight": torch.ones(4, 3)}, "stg")


def test_narrow_masks_keeps_the_gate_and_the_parameter_object():
    net = apply_masks(_net(), {"0.weight": torch.ones(4, 3)})
    orig, hook = net[0].weight_orig, torch_slt.core.base.pruning_hook(net[0], "weight")
    new = torch.eye(4, 3, dtype=torch.bool)
    narrow_masks(net, {"0.weight": new})
    assert net[0].weight_orig is orig and torch_slt.core.base.pruning_hook(net[0], "weight") is hook
    assert torch.equal(net[0].weight_mask, new)
    assert torch.equal(net[0].weight, orig * new)          # visible before the next forward


def test_narrow_masks_refuses_to_reopen_and_changes_nothing():
    net = apply_masks(_net(), {"0.weight": torch.eye(4, 3), "2.weight": torch.ones(2, 4)})
    before = _state(net)
    reopened = torch.eye(4, 3, dtype=torch.bool)
    reopened[0, 1] = True                                   # removed in the current mask
    with pytest.raises(MaskError, match="'0.weight' keeps 1 weight\\(s\\) that are already removed"):
        narrow_masks(net, {"2.weight": torch.zeros(2, 4), "0.weight": reopened})
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_narrow_masks_refuses_learned_gates_and_ungated_names():
    net = torch_slt.apply(_net(), "stg", lam=0.1)
    with pytest.raises(MaskError, match="learned"):
        narrow_masks(net, {"0.weight": torch.zeros(4, 3)})
    with pytest.raises(torch_slt.NotGatedError, match="'1.weight' is not gated"):
        narrow_masks(net, {"1.weight": torch.zeros(4, 3)})


def test_remove_gates_restores_full_weights_and_frozen_flags():
    net = _net()
    initial = _state(net)
    torch_slt.apply(net, "stg", lam=0.1)
    assert not net[0].bias.requires_grad
    remove_gates(net)
    assert not torch_slt.is_gated(net) and net[0].bias.requires_grad
    assert list(net.state_dict()) == list(initial)
    assert all(torch.equal(initial[k], v) for k, v in net.state_dict().items())
    with pytest.raises(torch_slt.NotGatedError):
        remove_gates(net)
