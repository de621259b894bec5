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


# ------------------------------------------------------------------------- kills at every stage boundary
class Killed(BaseException):
    """A kill: not an Exception, so no handler in the library catches it (as SIGKILL)."""


def _sites():
    """Every write or step between two stages of a round, as (owner, attribute)."""
    from torch_slt.lottery.folder import RunFolder
    from torch_slt.lottery.rewind import RewindPoint

    return [(imp_module, "train_weights"), (imp_module, "prune_survivors"), (RunFolder, "save_masks"),
            (RunFolder, "save_trained"), (RunFolder, "add_row"), (imp_module._Runner, "_drop_checkpoint"),
            (RewindPoint, "save")]


def _wrap(monkeypatch, owner, name, on_call):
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        on_call("before")
        out = real(*args, **kwargs)
        on_call("after")
        return out

    monkeypatch.setattr(owner, name, wrapped)


def test_a_kill_at_every_stage_boundary_resumes_to_the_uninterrupted_ticket(tmp_path, monkeypatch):
    """Killed before or after every call that ends a stage (training, pruning, the mask, the trained
    ticket, the row, the checkpoint's deletion, the rewind point), in every round: the resumed run ends
    with the uninterrupted run's weights, masks and rows, bit for bit (before: a kill after the last
    round's row resumed to the rewind weights x the mask, an untrained ticket)."""
    full_net, full = _run(tmp_path / "full")
    strip = lambda rows: [{k: v for k, v in dataclasses.asdict(r).items() if k != "wall_time"}  # noqa: E731
                          for r in rows]
    counts = {}
    for owner, name in _sites():
        with monkeypatch.context() as m:
            calls = []
            _wrap(m, owner, name, lambda when, calls=calls: calls.append(when) if when == "before" else None)
            _run(tmp_path / f"count-{name}")
        counts[name] = len(calls)
    assert counts["save_trained"] == 1 and counts["add_row"] == 5 and counts["save_masks"] == 3
    boundaries = 0
    for owner, name in _sites():
        for index in range(counts[name]):
            for moment in ("before", "after"):
                run_dir = tmp_path / f"{name}-{index}-{moment}"
                seen = []

                def on_call(when, seen=seen, index=index, moment=moment):
                    if when == moment:
                        seen.append(when)
                        if len(seen) == index + 1:
                            raise Killed

                with monkeypatch.context() as m:
                    _wrap(m, owner, name, on_call)
                    with pytest.raises(Killed):
                        _run(run_dir)
                net, resumed = _run(run_dir, resume=True)
                where = f"killed {moment} call {index} of {name}"
                assert resumed.completed, where
                assert strip(resumed.rows) == strip(full.rows), where
                assert net.state_dict().keys() == full_net.state_dict().keys(), where
                for key, value in full_net.state_dict().items():
                    assert torch.equal(net.state_dict()[key], value), (where, key)
                assert not list(run_dir.glob("checkpoint-*.pt")), where
                boundaries += 1
    assert boundaries == 2 * sum(counts.values())


def test_a_kill_after_the_last_row_without_the_trained_file_trains_the_last_round_again(tmp_path):
    """A run folder without trained.pt (written before it existed, or deleted): the recorded last round
    is trained again from its mask and the rewind point, to the same weights."""
    full_net, _ = _run(tmp_path / "full")
    (tmp_path / "full" / "trained.pt").write_bytes(b"truncated")
    with pytest.raises(RunFolderError, match=r"cannot read .*trained\.pt.*delete it to train the last round"):
        _run(tmp_path / "full", resume=True)
    (tmp_path / "full" / "trained.pt").unlink()
    net, resumed = _run(tmp_path / "full", resume=True)
    assert resumed.completed and (tmp_path / "full" / "trained.pt").exists()
    for key, value in full_net.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_a_folder_of_another_run_is_not_taken_over(tmp_path):
    """imp(run_dir=..., resume=True) on a `torch-slt find` folder (its config.json, or its checkpoint):
    refused before anything is written, the folder unchanged."""
    find_dir = tmp_path / "find"
    find_dir.mkdir()
    (find_dir / "config.json").write_text(json.dumps({"command": "find", "settings": {}}))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "checkpoint.pt").write_bytes(b"x")
    for folder, match in ((find_dir, "holds a 'find' run"), (bare, r"holds another run \(checkpoint\.pt\)")):
        before = sorted(p.name for p in folder.iterdir())
        with pytest.raises(RunFolderError, match=match):
            _run(folder, resume=True)
        assert sorted(p.name for p in folder.iterdir()) == before
