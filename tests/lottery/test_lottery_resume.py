"""A killed IMP run resumes at its round and epoch and ends exactly as an uninterrupted run."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.masks import hard_masks
from torch_slt.experiment.train import TrainConfig
from torch_slt.lottery import IMPConfig, RunFolderError, imp

imp_module = importlib.import_module("torch_slt.lottery.imp")  # the module (the package's `imp` is the function)


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.randn(24, 6, generator=g), torch.randint(0, 3, (24,), generator=g))


def _net():
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))


CONFIG = IMPConfig(rounds=2, rewind=2, controls=("random_mask",))
TRAINING = TrainConfig(epochs=3, batch_size=6, quiet=True)


def _run(tmp_path, **kw):
    net = _net()
    data = _data()
    result = imp(net, data, val=data, test=data, config=CONFIG, training=TRAINING, run_dir=tmp_path, **kw)
    return net, result


@pytest.mark.parametrize("kill_at", ["round 0 ticket", "round 1 ticket", "round 1 random_mask"])
def test_resume_after_a_kill_matches_the_uninterrupted_run(tmp_path, monkeypatch, kill_at):
    full_net, full = _run(tmp_path / "full")
    real = imp_module.train_weights

    def killed(net, train, config, **kw):   # that training stops after one epoch, as a kill would
        if kw.get("label") == kill_at:
            config = dataclasses.replace(config, stop_after=1)
        return real(net, train, config, **kw)

    monkeypatch.setattr(imp_module, "train_weights", killed)
    _, partial = _run(tmp_path / "resumed")
    assert not partial.completed
    assert list((tmp_path / "resumed").glob("checkpoint-*.pt"))
    monkeypatch.setattr(imp_module, "train_weights", real)
    net, resumed = _run(tmp_path / "resumed", resume=True)
    assert resumed.completed
    strip = [{k: v for k, v in dataclasses.asdict(r).items() if k != "wall_time"} for r in resumed.rows]
    assert strip == [{k: v for k, v in dataclasses.asdict(r).items() if k != "wall_time"} for r in full.rows]
    for key, value in full_net.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    assert not list((tmp_path / "resumed").glob("checkpoint-*.pt"))
    rows = json.loads((tmp_path / "resumed" / "rounds.json").read_text())
    assert [(r["round"], r["kind"]) for r in rows] == [(0, "ticket"), (1, "ticket"), (1, "random_mask"),
                                                       (2, "ticket"), (2, "random_mask")]
    assert hard_masks(net).keys() == {"0.weight", "2.weight"}


def test_resume_with_other_settings_is_refused(tmp_path):
    _run(tmp_path)
    with pytest.raises(RunFolderError, match="settings differ.*rounds"):
        imp(_net(), _data(), config=dataclasses.replace(CONFIG, rounds=3), training=TRAINING, run_dir=tmp_path,
            resume=True)
    with pytest.raises(RunFolderError, match="already holds an IMP run"):
        imp(_net(), _data(), config=CONFIG, training=TRAINING, run_dir=tmp_path)


def test_rewind_past_the_end_of_training_is_refused_and_changes_nothing(tmp_path):
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RunFolderError, match="rewind=12"):
        imp(net, _data(), config=IMPConfig(rounds=1, rewind=12), training=TRAINING, run_dir=tmp_path / "run")
    assert not torch_slt.is_gated(net)
    assert before.keys() == net.state_dict().keys()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not (tmp_path / "run").exists()
