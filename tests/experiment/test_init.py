"""torch_slt.experiment.init: the strong-ticket initialisations (edge-popup, methods.md section 1)."""

import math

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.experiment.init import INITIALIZERS, fan_in, initialize, kaiming_std


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 64, 3), nn.Flatten(), nn.Linear(400, 300), nn.Linear(300, 10))


def test_exported_from_package():
    assert torch_slt.experiment.init.initialize is initialize
    assert INITIALIZERS == ("kaiming-normal", "scaled-kaiming-normal", "signed-constant",
                            "unscaled-signed-constant")


def test_fan_in_of_linear_conv_grouped_and_hf_conv1d():
    from transformers.pytorch_utils import Conv1D

    assert fan_in(nn.Linear(7, 3)) == 7
    assert fan_in(nn.Conv2d(4, 8, 3)) == 36
    assert fan_in(nn.Conv2d(4, 8, 3, groups=2)) == 18
    assert fan_in(Conv1D(5, 11)) == 11  # weight is (in=11, out=5), transposed


@pytest.mark.parametrize("scheme", ["kaiming-normal", "scaled-kaiming-normal"])
def test_normal_schemes_have_kaiming_std_divided_by_density(scheme):
    torch.manual_seed(0)
    model = initialize(_net(), scheme, density=0.25, generator=torch.Generator().manual_seed(0))
    scale = 0.25 if scheme == "scaled-kaiming-normal" else 1.0
    for layer, n_in in ((model[0], 27), (model[2], 400), (model[3], 300)):
        expected = math.sqrt(2.0 / (n_in * scale))
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.08)
        assert layer.weight.mean().item() == pytest.approx(0.0, abs=0.1 * expected)


def test_density_is_the_kept_fraction_not_the_pruned_one():
    # The pitfall of the reference code: density 0.1 (sparsity 0.9) must make weights LARGER (var/0.1).
    model = initialize(nn.Linear(1000, 200), "scaled-kaiming-normal", density=0.1,
                       generator=torch.Generator().manual_seed(1))
    assert model.weight.std().item() == pytest.approx(math.sqrt(2.0 / (1000 * 0.1)), rel=0.03)
    assert kaiming_std(1000, 0.1) > kaiming_std(1000, 0.9)


def test_signed_constant_is_plus_minus_scaled_kaiming_std_with_random_signs():
    layer = initialize(nn.Linear(200, 100), "signed-constant", density=0.5,
                       generator=torch.Generator().manual_seed(0))
    std = math.sqrt(2.0 / (200 * 0.5))
    values = layer.weight.unique()
    assert torch.allclose(values, torch.tensor([-std, std]))
    assert 0.45 < (layer.weight > 0).float().mean().item() < 0.55


def test_biases_left_alone_and_generator_makes_it_deterministic():
    a, b = _net(), _net()
    b.load_state_dict(a.state_dict())
    bias = a[2].bias.clone()
    initialize(a, "kaiming-normal", generator=torch.Generator().manual_seed(3))
    initialize(b, "kaiming-normal", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[2].bias, bias)
    for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q)


def test_same_numbers_whatever_the_weight_dtype():
    a = initialize(nn.Linear(20, 5), generator=torch.Generator().manual_seed(0))
    b = initialize(nn.Linear(20, 5).double(), generator=torch.Generator().manual_seed(0))
    assert b.weight.dtype == torch.float64
    assert torch.equal(a.weight.double(), b.weight)


def test_bad_scheme_and_density_are_clear_errors():
    with pytest.raises(ValueError, match="scaled-kaiming-normal"):
        initialize(nn.Linear(2, 2), "xavier")
    with pytest.raises(ValueError, match="fraction of weights KEPT"):
        initialize(nn.Linear(2, 2), "signed-constant", density=0.0)
    with pytest.raises(ValueError, match="KEPT"):
        initialize(nn.Linear(2, 2), density=1.5)


def test_unscaled_signed_constant_ignores_density_and_takes_the_paper_alias():
    g = torch.Generator().manual_seed(0)
    layer = initialize(nn.Linear(50, 40, bias=False), "usc", density=0.1, generator=g)
    assert sorted(set(round(v, 6) for v in layer.weight.abs().flatten().tolist())) == [0.2]  # sqrt(2/50)
    signs = torch.sign(initialize(nn.Linear(50, 40, bias=False), "kaiming-normal",
                                  generator=torch.Generator().manual_seed(0)).weight)
    assert torch.equal(torch.sign(layer.weight), signs)   # the signs of the same Kaiming draw
    scaled = initialize(nn.Linear(50, 40, bias=False), "sc", density=0.5, generator=g)
    assert sorted(set(round(v, 4) for v in scaled.weight.abs().flatten().tolist())) == [0.2828]


def test_cli_init_usc_builds_an_unscaled_signed_constant_network():
    import argparse

    from torch_slt.cli.flags import add_run_flags
    from torch_slt.experiment.zoo import ModelSpec

    p = argparse.ArgumentParser()
    add_run_flags(p)
    assert p.parse_args(["--init", "usc"]).init == "unscaled-signed-constant"
    with pytest.raises(SystemExit):
        p.parse_args(["--init", "uniform"])
    assert ModelSpec("lenet300", (1, 8, 8), 10, init="usc").init == "unscaled-signed-constant"
