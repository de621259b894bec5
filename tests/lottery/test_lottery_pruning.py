"""IMP's pruning rounds: exact masks per round on hand-set weights, rates, scopes."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.masks import apply_masks, hard_masks
from torch_slt.experiment.train import TrainConfig
from torch_slt.lottery import IMPConfig, imp, layer_rates, prune_survivors, removal_count, survivor_masks


def _net(*sizes: int) -> nn.Sequential:
    layers = [nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(sizes)]
    return nn.Sequential(*layers)


def _set(layer: nn.Linear, values: list[float]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values).view_as(layer.weight))


def _hand_set() -> nn.Sequential:
    """fc1: |w| = 1..12 (signs alternate, positions shuffled), fc2: |w| = 0.5..3.0."""
    net = _net(4, 3, 2)
    _set(net[0], [5.0, -1.0, 9.0, -12.0, 3.0, -7.0, 2.0, -10.0, 11.0, -4.0, 8.0, -6.0])
    _set(net[1], [-2.0, 0.5, 3.0, -1.0, 1.5, -2.5])
    return net


def _kept_magnitudes(model: nn.Module, name: str) -> list[float]:
    module = dict(model.named_modules())[name.rsplit(".", 1)[0]]
    w = module.weight_orig[module.weight_mask]
    return sorted(w.abs().tolist())


def test_removal_count_is_ceil_of_rate_times_remaining():
    assert [removal_count(0.2, n) for n in (10, 11, 5, 1, 0)] == [2, 3, 1, 1, 0]
    assert removal_count(0.25, 12) == 3 and removal_count(0.125, 6) == 1


def test_layer_scope_masks_per_round_are_exact():
    net = _hand_set()
    apply_masks(net, {"0.weight": torch.ones(3, 4, dtype=torch.bool), "1.weight": torch.ones(2, 3)})
    rates = layer_rates(net, 0.25, None, "layer")
    assert rates == {"0.weight": 0.25, "1.weight": 0.125}  # fully connected: the output at half rate
    prune_survivors(net, rates, 0.25)
    assert _kept_magnitudes(net, "0.weight") == [float(v) for v in range(4, 13)]   # 1, 2, 3 removed
    assert _kept_magnitudes(net, "1.weight") == [1.0, 1.5, 2.0, 2.5, 3.0]          # 0.5 removed
    prune_survivors(net, rates, 0.25)
    assert _kept_magnitudes(net, "0.weight") == [float(v) for v in range(7, 13)]   # 9 -> 3 removed: 4, 5, 6
    assert _kept_magnitudes(net, "1.weight") == [1.5, 2.0, 2.5, 3.0]               # 5 -> 1 removed: 1.0


def test_global_scope_pools_the_hidden_layers_and_rate_zero_keeps_the_output_dense():
    net = _net(4, 3, 2, 2)
    _set(net[0], [float(v) for v in range(1, 13)])
    _set(net[1], [0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
    _set(net[2], [0.01, 0.02, 0.03, 0.04])
    apply_masks(net, {f"{i}.weight": torch.ones_like(net[i].weight, dtype=torch.bool) for i in range(3)})
    rates = layer_rates(net, 0.25, 0.0, "global")
    assert rates == {"0.weight": None, "1.weight": None, "2.weight": 0.0}
    masks = prune_survivors(net, rates, 0.25)
    # 18 pooled weights, ceil(4.5) = 5 removed: 0.5, 1, 1.5, 2, 2.5 (from both layers)
    assert _kept_magnitudes(net, "0.weight") == [float(v) for v in range(3, 13)]
    assert _kept_magnitudes(net, "1.weight") == [3.5, 4.5, 5.5]
    assert bool(masks["2.weight"].all())


def test_conv_nets_prune_the_output_at_the_full_rate():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    torch_slt.apply(net, "magnitude", sparsity=0.0)
    assert layer_rates(net, 0.2, None, "layer") == {"0.weight": 0.2, "2.weight": 0.2}


def test_survivor_masks_never_reopen_a_removed_weight():
    weights = {"w": torch.tensor([9.0, 1.0, 5.0, 3.0])}
    masks = {"w": torch.tensor([False, True, True, True])}   # the largest was removed earlier
    new = survivor_masks(weights, masks, {"w": 0.5}, 0.5)
    # 3 survivors, ceil(1.5) = 2 removed (1.0 and 3.0): only 5.0 stays; 9.0 stays removed.
    assert new["w"].tolist() == [False, False, True, False]


def test_imp_masks_per_round_on_hand_set_weights(tmp_path):
    """End to end with a learning rate too small to reorder the magnitudes: the run folder's masks are
    the exact magnitude rounds."""
    net = _hand_set()
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    training = TrainConfig(epochs=1, batch_size=4, optimizer="sgd", lr=1e-12, momentum=0.0,
                           weight_decay=0.0, quiet=True)
    result = imp(net, data, config=IMPConfig(rounds=2, prune_rate=0.25, scope="layer"), training=training,
                 run_dir=tmp_path)
    assert [r.kept for r in result.tickets()] == [18, 9 + 5, 6 + 4]
    from safetensors.torch import load_file

    round2 = load_file(str(tmp_path / "masks" / "round_02.safetensors"))
    fc1 = torch.tensor([5.0, -1.0, 9.0, -12.0, 3.0, -7.0, 2.0, -10.0, 11.0, -4.0, 8.0, -6.0]).view(3, 4)
    assert torch.equal(round2["0.weight"], fc1.abs() >= 7)
    assert torch.equal(hard_masks(net)["0.weight"], fc1.abs() >= 7)
    assert torch_slt.report(net).kept == 10


@pytest.mark.parametrize("bad,match", [({"prune_rate": 1.0}, "prune_rate=1.0"), ({"prune_rate": 0}, "prune_rate=0"),
                                       ({"scope": "model"}, "scope='model'"), ({"rounds": -1}, "rounds=-1"),
                                       ({"controls": ["shufle"]}, "shufle"), ({"output_rate": -0.1}, "output_rate")])
def test_bad_settings_name_the_value(bad, match):
    with pytest.raises(ValueError, match=match):
        IMPConfig(**bad)


def test_imp_refuses_a_gated_model_and_leaves_it_unchanged():
    net = torch_slt.apply(_net(3, 2), "magnitude", sparsity=0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="already gated"):
        imp(net, torch.utils.data.TensorDataset(torch.randn(4, 3), torch.zeros(4, dtype=torch.long)))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
