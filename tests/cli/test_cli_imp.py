"""``torch-slt imp`` end to end on digits: outputs, the final ticket, resume, bad flags."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from torch_slt import cli
from torch_slt.experiment.data import load_dataset
from torch_slt.experiment.zoo import ModelSpec, build_model

FAST = ["--rounds", "2", "--epochs", "1", "--batch-size", "128", "--quiet", "--device", "cpu"]


def _run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_imp_writes_rounds_masks_report_plot_and_a_plain_ticket(tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, err = _run(["imp", *FAST, "--controls", "reinit,random-mask", "--instability",
                            "--out", str(out)], capsys)
    assert rc == 0, err
    assert "2 rounds" in stdout and "64.34% of the weights remain" in stdout
    for name in ("config.json", "imp.json", "rounds.json", "rewind.pt", "imp.md", "imp.png", "report.json",
                 "ticket.safetensors", "instability.png", "masks/round_00.safetensors",
                 "masks/round_02.safetensors"):
        assert (out / name).exists(), name
    rows = json.loads((out / "rounds.json").read_text())
    assert [(r["round"], r["kind"]) for r in rows] == [(0, "ticket"), (1, "ticket"), (1, "reinit"),
                                                       (1, "random_mask"), (2, "ticket"), (2, "reinit"),
                                                       (2, "random_mask")]
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["instability"]["instability"]["barrier"] <= 1
    assert len(report["instability"]["instability"]["alphas"]) == 30
    # The last ticket loads strictly into the plain network, with 64.34% of its gated weights nonzero.
    splits = load_dataset("digits")
    plain = build_model(ModelSpec("lenet300", splits.in_shape, 10))
    state = load_file(str(out / "ticket.safetensors"))
    plain.load_state_dict(state, strict=True)
    weights = [p for n, p in plain.named_parameters() if n.endswith("weight")]
    kept = sum(int(torch.count_nonzero(w)) for w in weights) / sum(w.numel() for w in weights)
    assert kept == pytest.approx(0.6434, abs=1e-3)


def test_imp_resumes_and_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = _run(["imp", *FAST, "--out", str(out), "--stop-after", "1"], capsys)
    # stop-after stops every training after its first epoch: with 1 epoch per round the run completes.
    assert rc == 0, err
    rc, _, err = _run(["imp", *FAST, "--out", str(out), "--resume", "--rounds", "3"], capsys)
    assert rc == 2 and "--rounds 3" in err and "the run has 2" in err


def test_imp_resume_continues_a_stopped_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["imp", "--rounds", "1", "--epochs", "2", "--batch-size", "128", "--quiet", "--device", "cpu",
            "--out", str(out)]
    rc, _, err = _run([*argv, "--stop-after", "1"], capsys)
    assert rc == 0 and "--resume" in err and not (out / "report.json").exists()
    rc, stdout, err = _run(["imp", "--out", str(out), "--resume", "--quiet"], capsys)
    assert rc == 0, err
    assert (out / "report.json").exists() and "1 rounds" in stdout


@pytest.mark.parametrize("flag,value,match", [("--prune-rate", "1.5", "--prune-rate 1.5"),
                                              ("--controls", "shufle", "--controls"),
                                              ("--scope", "model", "invalid choice"),
                                              ("--rounds", "-1", "--rounds -1")])
def test_bad_flags_name_the_flag(tmp_path, capsys, flag, value, match):
    try:
        rc, _, err = _run(["imp", *FAST, flag, value, "--out", str(tmp_path / "x")], capsys)
    except SystemExit as exit_:   # argparse's own choices
        rc, err = exit_.code, capsys.readouterr().err
    assert rc == 2 and match in err
    assert not (tmp_path / "x").exists()
