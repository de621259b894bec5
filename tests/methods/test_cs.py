"""Continuous Sparsification (``cs``): exact soft and hard masks, penalty, temperature, rounds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.methods.cs import next_round, set_temperature, temperature


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _layer(**kw) -> nn.Module:
    layer = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 4.0]]))
    return torch_slt.prune.cs(layer, "weight", **kw)


def _set_scores(layer, values):
    with torch.no_grad():
        layer.weight_scores.copy_(torch.tensor([values]))


def test_hard_mask_is_scores_above_zero_and_eval_uses_it():
    layer = _layer()
    _set_scores(layer, [0.5, -0.1, 0.0])
    layer.eval()
    x = torch.ones(1, 3)
    assert layer(x).item() == pytest.approx(1.0)            # only w = 1.0 kept (s = 0 is not > 0)
    assert layer.weight_mask.tolist() == [[True, False, False]]


def test_train_forward_uses_the_scaled_soft_mask():
    layer = _layer(mask_init=-0.5)
    _set_scores(layer, [0.5, -0.1, 1.0])
    set_temperature(layer, 3.0)
    layer.train()
    out = layer(torch.ones(1, 3)).item()
    scale = 1 / _sigmoid(-0.5)
    expected = scale * (1.0 * _sigmoid(1.5) - 2.0 * _sigmoid(-0.3) + 4.0 * _sigmoid(3.0))
    assert out == pytest.approx(expected, rel=1e-6)


def test_initial_soft_mask_is_one_so_the_network_starts_dense():
    layer = _layer(mask_init=-0.01)
    layer.train()
    assert layer(torch.ones(1, 3)).item() == pytest.approx(3.0, rel=1e-6)


def test_gradients_reach_the_scores_and_the_weights():
    layer = _layer()
    layer.train()
    layer(torch.ones(1, 3)).sum().backward()
    # d out / d s_i = w_i * beta * sigmoid'(beta s) / sigmoid(s0) = w_i * 0.25 * 2 at s = 0, beta = 1
    assert layer.weight_scores.grad.flatten().tolist() == pytest.approx([0.5, -1.0, 2.0])
    assert layer.weight_orig.grad.flatten().tolist() == pytest.approx([1.0, 1.0, 1.0])   # soft mask 1


def test_penalty_is_lam_times_the_mean_soft_mask():
    layer = _layer(lam=0.3)
    _set_scores(layer, [0.5, -0.1, 1.0])
    expected = 0.3 * 2 * (_sigmoid(0.5) + _sigmoid(-0.1) + _sigmoid(1.0)) / 3
    assert torch_slt.penalty(layer).item() == pytest.approx(expected, rel=1e-6)
    torch_slt.penalty(layer).backward()
    assert layer.weight_scores.grad.abs().sum() > 0


def test_temperature_anneals_geometrically_to_final_temp_over_total_steps():
    layer = _layer(total_steps=5, final_temp=16.0)
    opt = torch.optim.SGD(layer.parameters(), lr=0.0)
    layer.train()
    seen = []
    for _ in range(7):
        layer(torch.ones(1, 3)).sum().backward()
        layer(torch.ones(1, 3))                              # an extra (logging) forward: no step
        torch_slt.penalty(layer)                             # nor an extra penalty call
        opt.step()
        seen.append(temperature(layer))
    assert seen == pytest.approx([2.0, 4.0, 8.0, 16.0, 16.0, 16.0, 16.0])
    layer.eval()
    with torch.no_grad():
        layer(torch.ones(1, 3))
    assert temperature(layer) == pytest.approx(16.0)        # eval forwards do not count


def test_an_optimizer_without_the_scores_does_not_anneal():
    layer = _layer(total_steps=5, final_temp=16.0)
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    layer(torch.ones(1, 3))
    other.step()
    assert temperature(layer) == 1.0


def test_next_round_is_the_reference_prune():
    layer = _layer(mask_init=-0.1, total_steps=3)
    _set_scores(layer, [0.5, -0.2, 0.01])
    set_temperature(layer, 10.0)
    next_round(layer)
    # The reference sets temp = 1, then prune() clamps temp * s: s <- min(s, s0) = -0.1, -0.2, -0.1.
    # (min(beta s, s0) at beta 10 would give -2.0 for the removed weight: ten times further away.)
    assert layer.weight_scores.flatten().tolist() == pytest.approx([-0.1, -0.2, -0.1])
    assert temperature(layer) == 1.0 and int(layer.weight_step) == 0


def test_weights_are_not_frozen_and_fit_trains_them():
    from torch_slt.experiment.train import TrainConfig, fit

    torch.manual_seed(0)
    model = torch_slt.apply(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)), "cs", lam=0.1)
    assert model[0].weight_orig.requires_grad and model[0].bias.requires_grad
    before = model[0].weight_orig.detach().clone()
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    result = fit(model, data, config=TrainConfig(epochs=1, batch_size=8, quiet=True))
    assert (result.config.optimizer, result.config.lr, result.config.weight_lr) == ("adam", 0.01, 1e-3)
    assert not torch.equal(model[0].weight_orig, before)


def test_finalize_keeps_the_hard_masked_eval_output():
    layer = _layer()
    _set_scores(layer, [1.0, 2.0, -1.0])
    layer.eval()
    x = torch.randn(4, 3)
    before = layer(x)
    torch_slt.finalize(layer)
    assert torch.equal(layer(x), before) and layer.weight.tolist() == [[1.0, -2.0, 0.0]]
    assert set(layer.state_dict()) == {"weight"}


@pytest.mark.parametrize("kwargs,match", [({"lam": -1.0}, "lam=-1.0"), ({"final_temp": 0.5}, "final_temp=0.5"),
                                          ({"mask_init": math.nan}, "mask_init"), ({"total_steps": 0}, "total_steps=0")])
def test_bad_settings_are_refused_and_the_model_is_unchanged(kwargs, match):
    model = nn.Sequential(nn.Linear(3, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        torch_slt.apply(model, "cs", **kwargs)
    assert not torch_slt.is_gated(model) and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_round_helpers_need_cs_gates():
    with pytest.raises(torch_slt.NotGatedError, match="no 'cs' gates"):
        next_round(torch_slt.apply(nn.Linear(2, 2), "stg", lam=0.1))


def test_to_ticket_trains_the_weights_through_the_hard_mask_only():
    from torch_slt.methods.cs import to_ticket

    layer = _layer(lam=0.5)
    _set_scores(layer, [1.0, -1.0, 2.0])
    to_ticket(layer)
    assert not layer.weight_scores.requires_grad and torch_slt.penalty(layer).item() == 0.0
    layer.train()
    out = layer(torch.ones(1, 3))
    assert out.item() == pytest.approx(5.0)                  # 1 + 4: the boolean mask, no 1/sigmoid(s0)
    out.backward()
    assert layer.weight_orig.grad.flatten().tolist() == [1.0, 0.0, 1.0]


def test_a_rewind_point_of_a_cs_model_holds_only_the_network():
    from torch_slt.lottery import capture, rewind

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    torch_slt.apply(net, "cs", total_steps=4)
    point = capture(net, 0)
    assert set(point.state) == set(initial)                 # no weight_scores / weight_beta / weight_step
    with torch.no_grad():
        net[0].weight_orig.add_(1.0)
        net[0].weight_scores.fill_(3.0)
    rewind(net, point)
    assert torch.equal(net[0].weight_orig, initial["0.weight"])
    assert bool((net[0].weight_scores == 3.0).all())        # the mask is not rewound


def test_reference_targets_gate_only_the_larger_convolutions():
    from torch_slt.methods.cs import reference_targets

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_a = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.downsample = nn.Conv2d(3, 4, 1, bias=False)
            self.classifier = nn.Linear(4, 2)

        def forward(self, x):
            return self.classifier((self.conv_a(x) + self.downsample(x)).mean((2, 3)))

    model = torch_slt.apply(Block(), "cs", lam=0.1, targets=reference_targets)
    assert [n for n, _ in model.named_parameters() if n.endswith("_scores")] == ["conv_a.weight_scores"]
    assert isinstance(model.downsample.weight, nn.Parameter) and isinstance(model.classifier.weight, nn.Parameter)


def test_nesterov_reaches_the_optimizer_and_needs_sgd_momentum():
    from torch_slt.core.errors import SettingError
    from torch_slt.experiment.train import TrainConfig
    from torch_slt.experiment.train.loop import _optimizer

    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True).resolved("cs")
    opt = _optimizer([{"params": [nn.Parameter(torch.zeros(2))]}], cfg)
    assert opt.defaults["nesterov"] is True and opt.defaults["momentum"] == 0.9
    with pytest.raises(SettingError, match="nesterov=True needs optimizer='sgd' with momentum > 0"):
        TrainConfig(optimizer="adam", nesterov=True).resolved("cs")
