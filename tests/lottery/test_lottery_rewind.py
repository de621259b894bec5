"""The rewind point: stored once, restored bit for bit, late rewinding resumes the data order."""

from __future__ import annotations

import copy

import torch
from torch import nn

import torch_slt
from torch_slt.experiment.train import TrainConfig
from torch_slt.lottery import (
    IMPConfig,
    RewindPoint,
    capture,
    imp,
    rewind,
    train_weights,
    weight_training_config,
)


def _data(n: int = 24):
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g))


def _net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _training(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 6, "quiet": True, **kw})


def test_point_uses_plain_names_and_loads_strictly_into_the_plain_model(tmp_path):
    net = torch_slt.apply(_net(), "magnitude", sparsity=0.5)
    point = capture(net, 0)
    assert "0.weight" in point.state and "0.weight_orig" not in point.state and "0.weight_mask" not in point.state
    point.save(tmp_path / "p.pt")
    again = RewindPoint.load(tmp_path / "p.pt")
    _net().load_state_dict(again.state, strict=True)
    assert again.iteration == 0 and all(torch.equal(v, point.state[k]) for k, v in again.state.items())


def test_rewind_to_zero_restores_the_initial_weights_bitwise(tmp_path):
    net = _net()
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    imp(net, _data(), config=IMPConfig(rounds=1), training=_training(), run_dir=tmp_path)
    point = RewindPoint.load(tmp_path / "rewind.pt")
    assert point.iteration == 0
    assert all(torch.equal(point.state[k], initial[k]) for k in initial)   # biases and BN buffers too
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    rewind(net, point)
    state = net.state_dict()
    assert torch.equal(state["0.weight_orig"], initial["0.weight"])
    assert torch.equal(state["1.running_mean"], initial["1.running_mean"])
    assert torch.equal(state["0.weight_mask"], trained["0.weight_mask"])   # the mask is not rewound
    assert not torch.equal(trained["0.weight_orig"], initial["0.weight"])


def test_late_rewind_stores_the_weights_of_iteration_k(tmp_path):
    k = 5
    reference = _net()
    seen = {}

    def keep(it):
        if it == k:
            seen["state"] = copy.deepcopy(reference.state_dict())

    cfg = weight_training_config(_training())
    torch_slt.apply(reference, "magnitude", sparsity=0.0)   # the same gated forward as IMP's round 0
    train_weights(reference, _data(), cfg, on_iteration=keep)
    net = _net()
    imp(net, _data(), config=IMPConfig(rounds=1, rewind=k), training=_training(), run_dir=tmp_path)
    point = RewindPoint.load(tmp_path / "rewind.pt")
    assert point.iteration == k
    for key, value in seen["state"].items():
        if key.endswith("_mask"):
            continue
        assert torch.equal(point.state[key.replace("_orig", "")], value), key


def test_training_from_iteration_k_matches_the_uninterrupted_run():
    """A round started at the rewind point sees the same batches and learning rates as the first round:
    trained from k on the weights of k, it ends where one uninterrupted run ends (with a stateless
    optimiser: the optimiser's state starts afresh at the rewind point, as in open_lth)."""
    k = 5
    cfg = weight_training_config(_training(epochs=3, schedule="cosine", optimizer="sgd", momentum=0.0))
    full = _net()
    at_k = {}
    train_weights(full, _data(), cfg, on_iteration=lambda it: at_k.setdefault(it, copy.deepcopy(full.state_dict())))
    resumed = _net()
    resumed.load_state_dict(at_k[k])
    run = train_weights(resumed, _data(), cfg, start_iteration=k)
    assert run.iterations == 12
    for key, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
