"""IMP presets: the original paper's layer-wise rates and open_lth's global ranking with a dense output."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.errors import SettingError
from torch_slt.lottery import IMPConfig
from torch_slt.lottery.pruning import layer_rates, prune_survivors


def _net() -> nn.Sequential:
    # hidden 10 weights (1..10 by magnitude), output 10 weights (0.1..1.0): a global ranking at 20 %
    # of 20 removes the 4 smallest overall, all in the output layer.
    net = nn.Sequential(nn.Linear(5, 2, bias=False), nn.Linear(5, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(1.0, 11.0).view(2, 5))
        net[1].weight.copy_(torch.arange(1.0, 11.0).view(2, 5) / 10)
    return torch_slt.apply(net, "magnitude", sparsity=0.0)


def _one_round(config: IMPConfig) -> list[int]:
    net = _net()
    rates = layer_rates(net, config.prune_rate, config.output_rate, config.scope)
    masks = prune_survivors(net, rates, config.prune_rate)
    return [int(masks[k].sum()) for k in ("0.weight", "1.weight")]


def test_presets_prune_as_their_references_by_hand():
    # paper: each layer alone, ceil(0.2 * 10) = 2 from the hidden layer, ceil(0.1 * 10) = 1 from the output
    assert _one_round(IMPConfig.preset("paper")) == [8, 9]
    # open_lth: the output layer is dense, the hidden layer (the whole pool) loses ceil(0.2 * 10) = 2
    assert _one_round(IMPConfig.preset("open_lth")) == [8, 10]
    # the default: global pool of the hidden layer; output at half rate on its own
    assert _one_round(IMPConfig()) == [8, 9]
    # global, output layer in the pool: the 4 smallest of all 20 are the output layer's
    assert _one_round(IMPConfig(output_rate=0.2)) == [10, 6]


def test_preset_overrides_and_bad_name():
    assert IMPConfig.preset("open_lth", rounds=3, prune_rate=0.3) == IMPConfig(
        rounds=3, prune_rate=0.3, output_rate=0.0, scope="global")
    with pytest.raises(SettingError, match="preset='lth'"):
        IMPConfig.preset("lth")


def test_cli_preset_under_the_flags():
    from torch_slt.cli.commands import imp as imp_cmd

    p = argparse.ArgumentParser()
    imp_cmd.add_arguments(p)
    flat = imp_cmd._typed(p.parse_args(["--preset", "paper", "--rounds", "2"]))
    assert imp_cmd._imp_config(flat) == IMPConfig(rounds=2, scope="layer", prune_rate=0.2, output_rate=0.1)
    flat = imp_cmd._typed(p.parse_args(["--preset", "open_lth", "--prune-rate", "0.3"]))
    assert imp_cmd._imp_config(flat) == IMPConfig(scope="global", prune_rate=0.3, output_rate=0.0)
