"""Hard-concrete gates: closed-form P(z != 0) against Monte Carlo, the sample's range, the gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.methods import hardconcrete as hc


def gated_layer(log_alpha: list[float], **kwargs) -> nn.Linear:
    layer = torch_slt.apply(nn.Linear(len(log_alpha), 1, bias=False), "hardconcrete", **kwargs)
    with torch.no_grad():
        layer.weight_orig.fill_(1.0)
        layer.weight_log_alpha.copy_(torch.tensor([log_alpha]))
    return layer


def test_closed_form_prob_nonzero_matches_monte_carlo():
    log_alpha = [-4.0, -1.6, -0.5, 0.0, 1.0, 3.0]
    draws = 20000
    layer = gated_layer(log_alpha * draws, lam=0.1).train()  # each value repeated: one draw per copy
    layer(torch.ones(1, len(log_alpha) * draws))
    z = layer.weight.detach().view(draws, len(log_alpha))  # the effective weight is 1 * z
    hook = next(h for _, _, h in torch_slt.gated_tensors(layer))
    closed = hook.prob_nonzero(layer).detach()[0, :len(log_alpha)]
    expected = torch.sigmoid(torch.tensor(log_alpha) - hc.BETA * math.log(-hc.GAMMA / hc.ZETA))
    torch.testing.assert_close(closed, expected)
    torch.testing.assert_close((z != 0).float().mean(0), closed, atol=0.015, rtol=0)


def test_sample_stays_in_unit_interval_and_reaches_exact_zeros_and_ones():
    layer = gated_layer([0.0] * 64).train()
    with torch.no_grad():
        z = torch.cat([layer(torch.eye(64)).squeeze(1) for _ in range(200)])
    assert z.min() == 0.0 and z.max() == 1.0
    assert (z == 0).float().mean() > 0.05 and (z == 1).float().mean() > 0.05
    assert ((z > 0) & (z < 1)).float().mean() > 0.3  # and it is continuous in between


def test_gradient_matches_the_autograd_composition():
    log_alpha = torch.tensor([-1.0, 0.0, 0.7, 2.0], requires_grad=True)
    weight = torch.tensor([0.5, -1.0, 2.0, 1.5], requires_grad=True)
    torch.manual_seed(3)
    hc._HardConcreteGate.apply(weight, log_alpha, None, 0.0).mul(torch.arange(1.0, 5.0)).sum().backward()
    fused = log_alpha.grad.clone(), weight.grad.clone()
    log_alpha.grad = weight.grad = None
    torch.manual_seed(3)
    u = torch.rand(4).mul_(1 - 2 * hc.EPS).add_(hc.EPS)
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / hc.BETA)
    z = (s * (hc.ZETA - hc.GAMMA) + hc.GAMMA).clamp(0, 1)
    (weight * z).mul(torch.arange(1.0, 5.0)).sum().backward()
    torch.testing.assert_close(fused[0], log_alpha.grad)
    torch.testing.assert_close(fused[1], weight.grad)


@pytest.mark.parametrize("droprate", [0.2, 0.5, 0.9])
def test_initialisation_follows_droprate(droprate):
    layer = torch_slt.apply(nn.Linear(100, 100), "hardconcrete", droprate_init=droprate)
    log_alpha = layer.weight_log_alpha.detach()
    assert abs(log_alpha.mean().item() - math.log((1 - droprate) / droprate)) < 1e-3
    assert abs(log_alpha.std().item() - 0.01) < 1e-3
    # P(z != 0) at init is about 0.83 for droprate 0.5 (the stretch adds mass): all kept; 0.9: none.
    assert layer.weight_mask.all() == (droprate < 0.8) and layer.weight_mask.any() == (droprate < 0.8)


def test_hard_mask_threshold_and_eval_mode():
    cut = hc.BETA * math.log(-hc.GAMMA / hc.ZETA)  # P(z != 0) = 1/2 here
    layer = gated_layer([cut - 0.01, cut + 0.01, 5.0]).eval()
    assert layer(torch.eye(3)).squeeze(1).tolist() == [0.0, 1.0, 1.0]
    strict = gated_layer([cut + 0.01, cut + math.log(3) + 0.01], threshold=0.75).eval()
    strict(torch.eye(2))
    assert strict.weight_mask.tolist() == [[False, True]]


def test_penalty_is_lam_times_expected_kept_fraction():
    layer = gated_layer([-2.0, 0.0, 2.0, 4.0], lam=0.3)
    prob = torch.sigmoid(torch.tensor([-2.0, 0.0, 2.0, 4.0]) - hc.BETA * math.log(-hc.GAMMA / hc.ZETA))
    torch.testing.assert_close(torch_slt.penalty(layer), 0.3 * prob.mean())
    torch_slt.penalty(layer).backward()
    assert layer.weight_log_alpha.grad.abs().sum() > 0


def test_bad_hyperparameters_raise_and_leave_the_model_alone():
    model = nn.Linear(3, 3)
    for kwargs, match in [({"droprate_init": 1.0}, "droprate_init"), ({"lam": -1.0}, "lam"),
                          ({"threshold": 0.0}, "threshold"), ({"sparsity": 1.2}, "outside")]:
        with pytest.raises((TypeError, ValueError), match=match):
            torch_slt.apply(model, "hardconcrete", **kwargs)
    assert not torch_slt.is_gated(model)


def test_reference_mask_rule_keeps_where_the_reference_test_gate_is_nonzero():
    # The reference's test gate min(1, max(0, sigmoid(a) * 1.2 - 0.1)) is 0 up to sigmoid(a) = 1/12,
    # i.e. a = log(1/11) = -2.3979; the default rule keeps from a = (2/3) log(1/11) = -1.5986.
    assert hc.REFERENCE_CUT == pytest.approx(-math.log(11.0))
    values = [-2.45, -2.35, -1.65, -1.55]
    gate = torch.clamp(torch.sigmoid(torch.tensor(values)) * (hc.ZETA - hc.GAMMA) + hc.GAMMA, 0, 1)
    assert (gate > 0).tolist() == [False, True, True, True]          # the reference's rule, by hand
    reference = gated_layer(values, mask_rule="reference").eval()
    reference(torch.eye(4))
    assert reference.weight_mask.tolist() == [[False, True, True, True]]
    default = gated_layer(values).eval()
    default(torch.eye(4))
    assert default.weight_mask.tolist() == [[False, False, False, True]]


def test_reference_mask_rule_refuses_a_threshold_or_a_target():
    model = nn.Linear(3, 3)
    for kwargs in ({"threshold": 0.6}, {"sparsity": 0.5}):
        with pytest.raises(ValueError, match="mask_rule='reference'"):
            torch_slt.apply(model, "hardconcrete", mask_rule="reference", **kwargs)
    with pytest.raises(ValueError, match="mask_rule='median'"):
        torch_slt.apply(model, "hardconcrete", mask_rule="median")
    assert not torch_slt.is_gated(model)
