"""Edge-popup: exact kept counts (per tensor and global, ties included), straight-through gradients."""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.methods.edgepopup import keep_top_abs
from torch_slt.core.selection import keep_count


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(10, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3))


def kept(model) -> list[int]:
    return [int(m.weight_mask.sum()) for _, m, _ in torch_slt.gated_tensors(model)]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 0.99])
def test_layer_scope_keeps_exact_count_per_tensor(sparsity):
    model = torch_slt.apply(mlp(), "edgepopup", sparsity=sparsity)
    assert kept(model) == [keep_count(n, sparsity) for n in (70, 35, 15)]
    model(torch.randn(2, 10))  # the forward recomputes the same count
    assert kept(model) == [keep_count(n, sparsity) for n in (70, 35, 15)]


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_global_scope_keeps_exact_count_overall_and_ranks_jointly(sparsity):
    model = torch_slt.apply(mlp(), "edgepopup", sparsity=sparsity, scope="global")
    assert sum(kept(model)) == keep_count(120, sparsity)
    scores = torch.cat([m.weight_scores.detach().abs().flatten() for m in model if hasattr(m, "weight_mask")])
    masks = torch.cat([m.weight_mask.flatten() for m in model if hasattr(m, "weight_mask")])
    assert scores[masks].min() >= scores[~masks].max()


def test_hand_set_scores_keep_the_largest_magnitudes():
    layer = torch_slt.apply(nn.Linear(4, 1, bias=False), "edgepopup", sparsity=0.5)
    with torch.no_grad():
        layer.weight_scores.copy_(torch.tensor([[0.1, -3.0, 0.2, 2.0]]))
    layer(torch.randn(1, 4))
    assert layer.weight_mask.tolist() == [[False, True, False, True]]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_ties_still_give_the_exact_count(scope):
    model = torch_slt.apply(mlp(), "edgepopup", sparsity=0.6, scope=scope)
    with torch.no_grad():
        for m in model:
            if hasattr(m, "weight_scores"):
                m.weight_scores.fill_(0.5)  # every score tied
    model(torch.randn(2, 10))
    if scope == "layer":
        assert kept(model) == [keep_count(n, 0.6) for n in (70, 35, 15)]
    else:
        assert sum(kept(model)) == keep_count(120, 0.6)


def test_keep_top_abs_handles_both_sides_and_extremes():
    scores = torch.tensor([3.0, -1.0, 1.0, 1.0, -2.0, 0.0])
    assert keep_top_abs(scores, 2).tolist() == [True, False, False, False, True, False]
    assert int(keep_top_abs(scores, 5).sum()) == 5 and not keep_top_abs(scores, 5)[5]
    assert int(keep_top_abs(scores, 3).sum()) == 3  # a tie at |s| = 1 broken, count exact
    assert keep_top_abs(scores, 0).sum() == 0 and keep_top_abs(scores, 6).all()


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_straight_through_gradient_reaches_scores(scope):
    layer = torch_slt.apply(nn.Linear(3, 2, bias=False), "edgepopup", sparsity=0.5, scope=scope)
    with torch.no_grad():
        layer.weight_orig.copy_(torch.tensor([[1.0, -2.0, 3.0], [0.5, 1.5, -1.0]]))
        layer.weight_scores.copy_(torch.tensor([[0.9, -0.1, 0.8], [-0.7, 0.2, 0.3]]))
    x = torch.tensor([[1.0, 2.0, -1.0]])
    layer.train()
    layer(x).sum().backward()
    # dL/dW_eff[o, i] = x[i]; straight-through: dL/ds = dL/dW_eff * W * sign(s), pruned weights included.
    expected = x.expand(2, 3) * layer.weight_orig.detach() * layer.weight_scores.detach().sign()
    torch.testing.assert_close(layer.weight_scores.grad, expected)
    assert layer.weight_scores.grad[layer.weight_mask.logical_not()].abs().sum() > 0


def test_scores_initialised_like_the_reference():
    torch.manual_seed(0)
    model = torch_slt.apply(nn.Linear(400, 50), "edgepopup", sparsity=0.5)
    bound = 1 / math.sqrt(400)  # kaiming_uniform_(a=sqrt(5)) on fan_in 400
    scores = model.weight_scores.detach()
    assert scores.abs().max() <= bound and scores.abs().max() > 0.95 * bound
    assert not model.weight_orig.requires_grad


def test_global_selection_survives_copies_and_state_dict():
    model = torch_slt.apply(mlp(), "edgepopup", sparsity=0.7, scope="global")
    opt = torch.optim.SGD(torch_slt.mask_parameters(model), lr=1.0)
    model(torch.randn(8, 10)).square().sum().backward()
    opt.step()
    x = torch.randn(4, 10)
    model.eval()
    expected = model(x)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(clone(x), expected, rtol=0, atol=0)
        with torch.no_grad():  # the clone's selection follows the clone's scores, not the original's
            clone[0].weight_scores.mul_(100)
        clone(x)
        assert sum(kept(clone)) == keep_count(120, 0.7)
        assert not torch.equal(clone[0].weight_mask, model[0].weight_mask)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    twin = torch_slt.apply(mlp(), "edgepopup", sparsity=0.7, scope="global").eval()
    twin.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(twin(x), expected, rtol=0, atol=0)


def test_sparsity_is_required_and_checked():
    model = mlp()
    with pytest.raises(TypeError, match="sparsity is required"):
        torch_slt.apply(model, "edgepopup")
    with pytest.raises(ValueError, match="outside"):
        torch_slt.apply(model, "edgepopup", sparsity=1.0)
    with pytest.raises(ValueError, match="scope"):
        torch_slt.apply(model, "edgepopup", sparsity=0.5, scope="per-tensor")
    with pytest.raises(TypeError, match="_slot"):
        torch_slt.apply(model, "edgepopup", sparsity=0.5, _slot=None)
    assert not torch_slt.is_gated(model)


def test_no_penalty():
    model = torch_slt.apply(mlp(), "edgepopup", sparsity=0.5)
    assert torch_slt.penalty(model).item() == 0.0
