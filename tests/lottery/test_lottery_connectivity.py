"""Linear mode connectivity: the barrier of identical copies is 0, of a bent line its height."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.experiment.train import TrainConfig
from torch_slt.lottery import error_barrier, instability, interpolate_from_init


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g))


def test_error_barrier_is_max_minus_mean_of_end_points():
    assert error_barrier([0.1, 0.1, 0.1]) == 0.0
    assert error_barrier([0.10, 0.40, 0.20]) == pytest.approx(0.25)
    assert error_barrier([0.3, 0.2, 0.1]) == pytest.approx(0.1)   # the end point itself, above the mean


def test_identical_copies_have_barrier_zero():
    torch.manual_seed(0)
    net = torch_slt.apply(nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)), "magnitude", sparsity=0.5)
    data = _data()
    # Two copies trained with the same data order and seed are identical: the line is flat.
    from torch_slt.analysis.landscape import loss_along_line

    line = loss_along_line(net, copy.deepcopy(net), data.tensors, steps=30)
    assert error_barrier([1 - a for a in line.accuracy]) == 0.0
    res = instability(net, data, data.tensors, training=TrainConfig(epochs=1, batch_size=8, quiet=True),
                      seeds=(1, 2), points=30)
    assert len(res.line.alphas) == 30 and res.barrier >= 0.0
    assert res.barrier == error_barrier(res.errors)


def test_instability_needs_two_different_seeds():
    with pytest.raises(ValueError, match="seeds=\\(1, 1\\)"):
        instability(nn.Linear(5, 3), _data(), _data().tensors, seeds=(1, 1))


def test_interpolation_from_init_reports_monotonicity():
    torch.manual_seed(0)
    init = nn.Linear(5, 3)
    res = interpolate_from_init(init, copy.deepcopy(init), _data().tensors, points=4)
    assert res.monotonic and res.max_increase == 0.0 and len(res.line.loss) == 4
