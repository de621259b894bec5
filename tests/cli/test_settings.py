"""cli/settings.py and cli/prepare.py: typed settings built once from the flags; errors name the flag."""

from __future__ import annotations

import json

import pytest

from torch_slt.cli import main
from torch_slt.cli.settings import TRAINING_FLAGS, RunSettings, flag_of, from_args
from torch_slt.cli.main import build_parser


def _settings(argv):
    return from_args(build_parser().parse_args(["find", *argv]), None)[0]


def test_flags_become_typed_settings_and_defaults_fill_the_rest():
    s = _settings(["--lam", "0.2", "--epochs", "3", "--batch-size", "32", "--method-arg", "threshold=0.6"])
    assert isinstance(s, RunSettings)
    assert (s.lam, s.training.epochs, s.training.batch_size) == (0.2, 3, 32)
    assert s.method_args == {"threshold": 0.6}
    assert (s.method, s.dataset, s.training.lr) == ("stg", "digits", None)


def test_weight_lr_and_train_weights_flags_reach_the_training_settings():
    s = _settings(["--method", "cs", "--weight-lr", "0.01", "--no-train-weights"])
    assert (s.training.weight_lr, s.training.train_weights) == (0.01, False)
    assert _settings(["--train-weights"]).training.train_weights is True
    assert _settings([]).training.train_weights is None   # the method's default, resolved by fit


def test_the_batchnorm_recalibration_flag_reaches_the_training_settings():
    assert _settings([]).training.recalibrate_batchnorm is True
    assert _settings(["--no-recalibrate-batchnorm"]).training.recalibrate_batchnorm is False
    assert _settings(["--recalibrate-batchnorm"]).training.recalibrate_batchnorm is True


def test_to_dict_is_flat_and_round_trips():
    s = _settings(["--epochs", "7", "--schedule", "cosine", "--seed", "3"])
    flat = s.to_dict()
    assert set(flat) == set(RunSettings.names()) and set(TRAINING_FLAGS) <= set(flat)
    assert "training" not in flat and flat["epochs"] == 7
    assert RunSettings.from_dict(json.loads(json.dumps(flat))) == s


@pytest.mark.parametrize("setting, flag", [("batch_size", "--batch-size"), ("epochs", "--epochs"),
                                           ("weight_decay", "--weight-decay"), ("method_args", "--method-arg")])
def test_flag_of(setting, flag):
    assert flag_of(setting) == flag


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs 0 must be a positive integer"),
    (["--batch-size", "-4"], "--batch-size -4 must be a positive integer"),
    (["--lr", "-0.1"], "--lr -0.1 must be a positive number"),
    (["--method", "cs", "--weight-lr", "0"], "--weight-lr 0.0 must be a positive number"),
    (["--momentum", "-1", "--optimizer", "sgd"], "--momentum -1.0 must be a number >= 0"),
])
def test_training_errors_name_the_flag_not_the_field(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["find", *argv, "--quiet", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "TrainConfig" not in err and "batch_size" not in err
    assert not out.exists()


def test_resume_clash_names_the_flag(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"command": "find", "settings": _settings([]).to_dict()}))
    args = build_parser().parse_args(["find", "--resume", "--out", str(out), "--batch-size", "16"])
    with pytest.raises(Exception, match=r"--batch-size 16 \(the run has 64\)"):
        from_args(args, out)


@pytest.mark.parametrize("train, ramp", [(1294, 0.5), (54000, 1000 / 16880)])
def test_a_sparsity_targets_ramp_lasts_half_the_run_but_at_most_1000_steps(train, ramp):
    from types import SimpleNamespace

    import torch

    from torch_slt.cli.prepare import method_kwargs

    splits = SimpleNamespace(train=range(train))
    kwargs = method_kwargs("stg", _settings([]), 0.9, splits, torch.device("cpu"))
    assert kwargs["total_steps"] == 20 * -(-train // 64) and kwargs["ramp"] == pytest.approx(ramp)
    assert method_kwargs("hardconcrete", _settings([]), 0.9, splits, torch.device("cpu"))["ramp"] == \
        pytest.approx(ramp)
    # a ramp the user gave is kept; without a target there is no ramp to set
    given = method_kwargs("stg", _settings(["--method-arg", "ramp=0.3"]), 0.9, splits, torch.device("cpu"))
    assert given["ramp"] == 0.3
    assert "ramp" not in method_kwargs("stg", _settings([]), None, splits, torch.device("cpu"))


@pytest.mark.parametrize("train, lr", [(1294, 5e-2), (54000, 1e-2), (6400, 5e-2 * 1000 / 2000)])
def test_a_long_stg_target_run_lowers_the_default_gate_lr_to_the_same_total_travel(train, lr):
    from types import SimpleNamespace

    import torch

    from torch_slt.cli.prepare import long_run_config, method_kwargs, train_config

    model = torch.nn.Linear(4, 2)
    splits = SimpleNamespace(train=range(train))

    def run_lr(argv, method="stg", sparsity=0.9):
        s = _settings(argv)
        config = train_config(s, method, torch.device("cpu"), model)
        kwargs = method_kwargs(method, s, sparsity, splits, torch.device("cpu"))
        return long_run_config(config, s, method, model, kwargs).lr

    assert run_lr([]) == pytest.approx(lr)
    assert run_lr(["--lr", "0.05"]) == 0.05                     # an --lr given is kept
    assert run_lr([], sparsity=None) == 5e-2                     # the paper's lam= runs: unchanged
    assert run_lr([], method="hardconcrete") == 0.15             # other methods keep their own


def test_find_records_the_lowered_gate_lr_of_a_long_target_run(tmp_path):
    out = tmp_path / "run"
    rc = main(["find", "--sparsity", "0.5", "--epochs", "2", "--batch-size", "2", "--width", "0.1",
               "--quiet", "--device", "cpu", "--threads", "1", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    steps = 2 * -(-report["dataset"]["train"] // 2)  # 2 epochs of batches of 2: about 1,300 steps
    assert rc == 0 and steps > 1000 and report["training"]["lr"] == pytest.approx(5e-2 * 1000 / steps)
