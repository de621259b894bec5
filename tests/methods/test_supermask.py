"""Supermask: Bernoulli sampling in train mode, the deterministic rule (or sampling) in eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt


def layer_with_scores(scores: list[float], **kwargs) -> nn.Linear:
    layer = torch_slt.apply(nn.Linear(len(scores), 1, bias=False), "supermask", **kwargs)
    with torch.no_grad():
        layer.weight_orig.fill_(1.0)
        layer.weight_scores.copy_(torch.tensor([scores]))
    return layer


def test_train_mode_samples_bernoulli_of_sigmoid():
    scores = [-2.0, -0.5, 0.0, 1.0, 3.0]
    layer = layer_with_scores(scores).train()
    x = torch.eye(5)  # row i reads weight i: the output is the sampled mask entry
    draws = torch.stack([layer(x).squeeze(1) for _ in range(4000)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(draws.mean(0), torch.sigmoid(torch.tensor(scores)), atol=0.03, rtol=0)


def test_eval_mode_uses_the_hard_rule_sigmoid_above_half():
    layer = layer_with_scores([-2.0, -0.01, 0.01, 3.0]).eval()
    out = layer(torch.eye(4)).squeeze(1)
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert layer.weight_mask.tolist() == [[False, False, True, True]]
    assert torch.equal(layer(torch.eye(4)), layer(torch.eye(4).clone()))  # deterministic


def test_threshold_moves_the_hard_rule():
    layer = layer_with_scores([0.5, 1.5], threshold=0.75).eval()  # sigmoid: 0.62, 0.82
    layer(torch.eye(2))
    assert layer.weight_mask.tolist() == [[False, True]]


def test_eval_mode_sample_draws_masks_as_the_paper_did():
    layer = layer_with_scores([0.0] * 200, eval_mode="sample").eval()
    x = torch.eye(200)
    a, b = layer(x), layer(x)
    assert not torch.equal(a, b)
    assert 0.35 < a.mean().item() < 0.65
    assert not layer.weight_mask.any()  # the hard mask (sigmoid(0) = 1/2 is not > 1/2) is still shown
    torch_slt.finalize(layer)
    assert layer.weight.abs().sum() == 0  # finalize keeps the deterministic hard mask


def test_straight_through_gradient_to_sigmoid():
    layer = layer_with_scores([0.3, -1.2, 2.0]).train()
    with torch.no_grad():
        layer.weight_orig.copy_(torch.tensor([[2.0, -1.0, 0.5]]))
    x = torch.tensor([[1.0, 3.0, -2.0]])
    layer(x).sum().backward()
    p = torch.sigmoid(layer.weight_scores.detach())
    # dL/dm = x * w for every weight, sampled in or out; times sigmoid'(s) = p (1 - p).
    torch.testing.assert_close(layer.weight_scores.grad, x * layer.weight_orig.detach() * p * (1 - p))


def test_score_init_sets_the_initial_probability_and_bad_values_raise():
    layer = torch_slt.apply(nn.Linear(5, 5), "supermask", score_init=-1.0)
    assert torch.all(layer.weight_scores == -1.0) and not layer.weight_mask.any()
    assert torch_slt.penalty(layer).item() == 0.0  # no penalty: the kept fraction emerges
    model = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="score_init"):
        torch_slt.apply(model, "supermask", score_init=float("nan"))
    with pytest.raises(ValueError, match="eval_mode"):
        torch_slt.apply(model, "supermask", eval_mode="mean")
    assert not torch_slt.is_gated(model)


def test_dynamic_scaling_multiplies_the_training_sample_by_numel_over_ones():
    torch.manual_seed(0)
    layer = layer_with_scores([0.0] * 8, dynamic_scaling=True).train()
    x = torch.eye(8)
    for _ in range(20):
        out = layer(x).squeeze(1)  # row i reads weight i: the scaled sample entry
        ones = int((out != 0).sum())
        expected = torch.where(out != 0, torch.tensor(8.0 / max(ones, 1)), torch.tensor(0.0))
        torch.testing.assert_close(out, expected)


def test_dynamic_scaling_gradient_is_the_straight_through_one_times_the_factor():
    # Logits of +-8 keep with probability 0.9997 or 0.0003, and this seed draws (keep, keep, drop, keep),
    # checked by the output below: the factor is 4 / 3. (At +-30, sigmoid' is 0 in float32 and the
    # gradient check could not fail.)
    torch.manual_seed(0)
    layer = layer_with_scores([8.0, 8.0, -8.0, 8.0], dynamic_scaling=True).train()
    with torch.no_grad():
        layer.weight_orig.copy_(torch.tensor([[2.0, -1.0, 0.5, 1.5]]))
    x = torch.tensor([[1.0, 3.0, -2.0, 0.5]])
    out = layer(x)
    torch.testing.assert_close(out, torch.tensor([[(2.0 - 3.0 + 0.75) * 4 / 3]]))
    out.sum().backward()
    w, p = layer.weight_orig.detach(), torch.sigmoid(layer.weight_scores.detach())
    expected = x * w * p * (1 - p) * 4 / 3
    assert expected.abs().min() > 1e-5   # large enough that a wrong factor shows
    torch.testing.assert_close(layer.weight_scores.grad, expected, rtol=1e-5, atol=0)


def test_dynamic_scaling_leaves_eval_and_finalize_on_the_plain_hard_mask():
    layer = layer_with_scores([-2.0, 0.5, 0.5, 3.0], dynamic_scaling=True).eval()
    assert layer(torch.eye(4)).squeeze(1).tolist() == [0.0, 1.0, 1.0, 1.0]  # unscaled
    torch_slt.finalize(layer)
    assert layer.weight.tolist() == [[0.0, 1.0, 1.0, 1.0]]
    with pytest.raises(TypeError, match="dynamic_scaling"):
        torch_slt.apply(nn.Linear(2, 2), "supermask", dynamic_scaling="yes")


def test_dynamic_scaling_is_the_references_mean_factor_not_a_variance_one():
    """Nine random layers at p = 1/2. Masking shrinks the output's norm by about sqrt(2) per layer
    (2^4.5 = 23 in all); the reference's factor 1/p = 2 overshoots by as much the other way."""

    def stack(**kwargs):
        torch.manual_seed(0)
        layers = [nn.Linear(64, 64, bias=False) for _ in range(9)]
        return torch_slt.apply(nn.Sequential(*layers), "supermask", **kwargs).train()

    torch.manual_seed(1)
    x = torch.randn(32, 64)
    with torch.no_grad():
        dense = x.clone()
        for layer in stack():
            dense = dense @ layer.weight_orig.T
        plain, scaled = stack()(x), stack(dynamic_scaling=True)(x)
    assert 10 < dense.norm() / plain.norm() < 50
    assert 10 < scaled.norm() / dense.norm() < 50
