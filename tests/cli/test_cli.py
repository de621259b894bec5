"""The torch-slt command line end to end on digits: outputs, reloads, resume, bad input."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import torch_slt
from torch_slt import cli
from torch_slt.experiment.data import load_dataset
from torch_slt.experiment.zoo import ModelSpec, build_model

FAST = ["--epochs", "2", "--batch-size", "64", "--quiet", "--device", "cpu"]
OUTPUTS = {"config.json", "report.json", "report.md", "ticket.safetensors", "ticket.slt.safetensors",
           "layer_sparsity.png"}


def _family_cases():
    """One method per family that is registered: a learned gate, edge-popup, a one-shot method."""
    cases = [("stg", [])]
    if "edgepopup" in torch_slt.list_methods():
        cases.append(("edgepopup", ["--sparsity", "0.7"]))
    cases.append(("snip", ["--sparsity", "0.8"]))
    return cases


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_python_m_torch_slt_help():
    done = subprocess.run([sys.executable, "-m", "torch_slt", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "find" in done.stdout and "sweep" in done.stdout


@pytest.mark.parametrize("command", ["find", "sweep", "inspect", "methods"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0 and f"torch-slt {command}" in capsys.readouterr().out


def test_methods_lists_every_registered_method(capsys):
    rc, out, _ = _run(["methods"], capsys)
    assert rc == 0
    for name in torch_slt.list_methods():
        row = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        assert torch_slt.get_method(name).description in row


@pytest.mark.parametrize("method, extra", _family_cases())
def test_find_writes_a_ticket_that_reloads_to_identical_outputs(method, extra, tmp_path, capsys, digits):
    out = tmp_path / "run"
    rc, stdout, err = _run(["find", "--method", method, *extra, *FAST, "--out", str(out)], capsys)
    assert rc == 0, err
    assert {p.name for p in out.iterdir()} == OUTPUTS   # no checkpoint or staging left behind
    report = json.loads((out / "report.json").read_text())
    assert f"test accuracy {report['accuracy']['test']:.2%}" in stdout
    assert report["method"]["name"] == method and len(report["history"]) in (1, 2)
    assert "Per-layer sparsity" in (out / "report.md").read_text()
    assert (out / "layer_sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    spec = ModelSpec.from_dict(report["model"])
    standard = build_model(spec)
    standard.load_state_dict(load_file(out / "ticket.safetensors"), strict=True)
    compact, spec2, _ = torch_slt.load_ticket(out / "ticket.slt.safetensors")
    assert spec2 == spec
    x, y = digits.test.tensors()
    standard.eval(), compact.eval()
    with torch.no_grad():
        logits = standard(x)
        assert torch.equal(logits, compact(x))
    assert (logits.argmax(1) == y).sum().item() / len(y) == report["accuracy"]["test"]
    assert torch_slt.report(standard).sparsity == pytest.approx(report["sparsity"]["sparsity"], abs=1e-12)
    if "--sparsity" in extra:
        target = float(extra[extra.index("--sparsity") + 1])
        assert abs(report["sparsity"]["kept"] - round((1 - target) * report["sparsity"]["total"])) <= 1
    # one-shot masks are fixed at apply, so their weights train by default (a weak ticket stores its
    # trained values); learned masks keep the weights frozen and store one bit per weight
    cls = torch_slt.get_method(method)
    assert report["training"]["train_weights"] is (not cls.learned or cls.trains_weights)
    if not report["training"]["train_weights"]:
        assert (out / "ticket.slt.safetensors").stat().st_size * 25 <= (out / "ticket.safetensors").stat().st_size


def test_no_train_weights_keeps_a_one_shot_ticket_on_its_random_weights(tmp_path, capsys):
    args = ["find", "--method", "magnitude", "--sparsity", "0.5", *FAST]
    rc, _, err = _run([*args, "--no-train-weights", "--out", str(tmp_path / "frozen")], capsys)
    assert rc == 0, err
    frozen = json.loads((tmp_path / "frozen" / "report.json").read_text())
    assert frozen["training"]["train_weights"] is False and frozen["settings"]["train_weights"] is False
    rc, _, err = _run([*args, "--out", str(tmp_path / "trained")], capsys)
    assert rc == 0, err
    trained = json.loads((tmp_path / "trained" / "report.json").read_text())
    assert trained["settings"]["train_weights"] is None and trained["training"]["train_weights"] is True
    assert "| train_weights | True (default for magnitude) |" in (tmp_path / "trained" / "report.md").read_text()
    frozen_model = torch_slt.load_ticket(tmp_path / "frozen" / "ticket.slt.safetensors")[0]
    trained_model = torch_slt.load_ticket(tmp_path / "trained" / "ticket.slt.safetensors")[0]
    # the same mask (magnitude of the same random weights), other kept values
    frozen_sd, trained_sd = frozen_model.state_dict(), trained_model.state_dict()
    matrices = [k for k, v in frozen_sd.items() if k.endswith("weight") and v.dim() == 2]
    assert matrices and all(torch.equal(frozen_sd[k] != 0, trained_sd[k] != 0) for k in matrices)
    assert all(not torch.equal(frozen_sd[k], trained_sd[k]) for k in matrices)
    assert trained["accuracy"]["test"] > frozen["accuracy"]["test"] + 0.3


def test_resume_after_an_interrupted_run_gives_the_same_ticket(tmp_path, capsys):
    args = ["find", "--epochs", "3", "--batch-size", "64", "--quiet", "--device", "cpu", "--lam", "0.3"]
    rc, _, _ = _run([*args, "--out", str(tmp_path / "full")], capsys)
    assert rc == 0
    part = tmp_path / "part"
    rc, _, err = _run([*args, "--out", str(part), "--stop-after", "1"], capsys)
    assert rc == 0 and "--resume" in err
    assert (part / "checkpoint.pt").exists() and not (part / "report.json").exists()
    rc, _, err = _run(["find", "--out", str(part), "--resume", "--lr", "0.5"], capsys)   # other settings
    assert rc == 2 and "--lr 0.5" in err
    rc, _, err = _run(["find", "--out", str(part), "--resume", "--quiet"], capsys)       # its own settings
    assert rc == 0, err
    full = load_file(tmp_path / "full" / "ticket.safetensors")
    resumed = load_file(part / "ticket.safetensors")
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    history = [json.loads((d / "report.json").read_text())["history"] for d in (tmp_path / "full", part)]
    assert history[0] == history[1]
    assert json.loads((part / "report.json").read_text())["training"]["resumed_from_epoch"] == 1
    rc, _, err = _run(["find", "--out", str(part), "--resume"], capsys)   # nothing left to resume
    assert rc == 2 and "finished run" in err


def test_default_out_is_a_fresh_folder_under_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert _run(["find", "--epochs", "1", "--quiet", "--device", "cpu"], capsys)[0] == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("find-stg-lenet300-digits-") for r in runs)
    assert all((r / "report.json").exists() for r in runs)


@pytest.mark.parametrize("argv, message", [
    (["--model", "lenet5"], "unknown model 'lenet5'"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; choose one of digits"),
    (["--method", "stgg"], "Did you mean 'stg'"),
    (["--method", "snip"], "sparsity is required"),
    (["--method", "snip", "--sparsity", "0.5", "--sigma", "0.3"], "--sigma does not apply to method 'snip'"),
    (["--sparsity", "1.5"], "outside [0, 1)"),
    (["--dataset", "mnist", "--data-dir", "{tmp}/nothing-here"], "nothing-here"),
])
def test_bad_input_exits_2_with_a_message_and_writes_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc, stdout, err = _run(["find", *argv, *FAST, "--out", str(out)], capsys)
    assert rc == 2 and message in err and "Traceback" not in err and stdout == ""
    assert err.startswith("torch-slt find: error: ") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_unusable_out_folders_are_refused(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    rc, _, err = _run(["find", *FAST, "--out", str(a_file / "sub")], capsys)
    assert rc == 2 and "not a writable folder" in err
    rc, _, err = _run(["find", *FAST, "--out", str(a_file)], capsys)
    assert rc == 2 and "is a file" in err
    rc, _, err = _run(["find", *FAST, "--out", str(tmp_path)], capsys)   # not empty: would mix runs
    assert rc == 2 and "not empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_inspect_a_run_folder_and_both_tickets(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, _ = _run(["find", "--method", "magnitude", "--sparsity", "0.6", *FAST, "--out", str(out)], capsys)
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    rc, text, _ = _run(["inspect", str(out)], capsys)
    assert rc == 0 and f"{report['accuracy']['test']:.2%}" in text and "Per-layer sparsity" in text
    rc, text, _ = _run(["inspect", str(out / "ticket.slt.safetensors"), "--json"], capsys)
    data = json.loads(text)
    assert rc == 0 and data["weights_verified"] and data["sparsity"]["kept"] == report["sparsity"]["kept"]
    rc, text, _ = _run(["inspect", str(out / "ticket.safetensors"), "--json"], capsys)
    assert rc == 0 and json.loads(text)["kept"] == report["sparsity"]["kept"]
    rc, _, err = _run(["inspect", str(tmp_path / "missing")], capsys)
    assert rc == 2 and "does not exist" in err


def test_sweep_shares_one_network_and_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "sweep"
    rc, stdout, err = _run(["sweep", "--methods", "stg,magnitude", "--sparsities", "0.5,0.9", "--epochs", "1",
                            "--batch-size", "128", "--quiet", "--device", "cpu", "--out", str(out)], capsys)
    assert rc == 0, err
    assert {"sweep.json", "sweep.md", "curve.png", "tickets"} <= {p.name for p in out.iterdir()}
    result = json.loads((out / "sweep.json").read_text())
    magnitude = [r for r in result["rows"] if r["method"] == "magnitude"]
    assert [r["target_sparsity"] for r in magnitude] == [0.5, 0.9]
    assert all(abs(r["sparsity"] - r["target_sparsity"]) < 1e-4 for r in magnitude)
    assert {r["method"] for r in result["rows"]} == {"stg", "magnitude"}
    assert result["dense"]["method"] == "dense" and 0 < result["dense"]["test_accuracy"] <= 1
    # One frozen network: every ticket regenerates the same weights (same spec and seed).
    hashes = {torch_slt.experiment.ticket.ticket_info(out / r["ticket"])["weights_hash"] for r in result["rows"]}
    assert len(hashes) == 1
    assert "| magnitude | 90% |" in (out / "sweep.md").read_text() and "dense" in stdout
    # stg's masks train on frozen weights; magnitude's one-shot survivors train (its default), and the
    # report says which is which
    assert {r["method"]: r["train_weights"] for r in result["rows"]} == {"stg": False, "magnitude": True}
    assert ("The weights stay frozen for `stg` (strong tickets); the surviving weights are trained for "
            "`magnitude`") in (out / "sweep.md").read_text()
    rc, text, _ = _run(["inspect", str(out)], capsys)
    assert rc == 0 and "| magnitude | 90% |" in text


def test_sweep_lams_runs_the_papers_formulation_and_names_every_formulation(tmp_path, capsys):
    out = tmp_path / "sweep"
    rc, _, err = _run(["sweep", "--methods", "stg,magnitude", "--sparsities", "0.7", "--lams", "0.01,10",
                       "--epochs", "1", "--batch-size", "128", "--no-dense", "--quiet", "--device", "cpu",
                       "--out", str(out)], capsys)
    assert rc == 0, err
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(r["method"], r["target_sparsity"], r["lam"], r["formulation"]) for r in rows] == [
        ("stg", 0.7, None, "stg + exact target (torch_slt)"),
        ("stg", None, 0.01, "stg (paper: lam=0.01)"), ("stg", None, 10.0, "stg (paper: lam=10)"),
        ("magnitude", 0.7, None, "magnitude (global)")]
    paper = {r["lam"]: r["sparsity"] for r in rows if r["lam"] is not None}
    assert paper[10.0] > paper[0.01]          # the sparsity the penalty reached, not a target
    kwargs = rows[1]["kwargs"]
    assert kwargs["lam"] == 0.01 and kwargs["sparsity"] is None
    from torch_slt.experiment.ticket import ticket_info

    info = ticket_info(out / rows[2]["ticket"])
    assert info["metadata"]["formulation"] == "stg (paper: lam=10)"
    assert set(info["formulation"].values()) == {"stg (paper: lam=10)"}
    assert "| stg | - | 10 | stg (paper: lam=10) |" in (out / "sweep.md").read_text()
    assert (out / "curve.png").exists() and (out / "cells" / "stg-lam10.json").exists()


def test_sweep_lams_needs_a_gate_method_and_numbers(tmp_path, capsys):
    rc, _, err = _run(["sweep", "--methods", "magnitude", "--lams", "0.1", "--out", str(tmp_path / "s")], capsys)
    assert rc == 2 and "add stg or hardconcrete" in err and not (tmp_path / "s").exists()
    rc, _, err = _run(["sweep", "--methods", "stg", "--lams", "0.1,x", "--out", str(tmp_path / "s")], capsys)
    assert rc == 2 and "--lams '0.1,x'" in err
    rc, _, err = _run(["sweep", "--methods", "magnitude", "--sparsities", "none", "--out", str(tmp_path / "s")],
                      capsys)
    assert rc == 2 and "no cell to run" in err


def test_sweep_rejects_bad_lists(tmp_path, capsys):
    rc, _, err = _run(["sweep", "--methods", "stg,nope", "--out", str(tmp_path / "s")], capsys)
    assert rc == 2 and "unknown method 'nope'" in err
    rc, _, err = _run(["sweep", "--sparsities", "0.5,2", "--out", str(tmp_path / "s")], capsys)
    assert rc == 2 and "[0, 1)" in err and not (tmp_path / "s").exists()


def test_threads_flag_sets_torch_threads_and_rejects_zero(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert cli.main(["find", "--threads", "0", "--out", str(tmp_path / "t0")]) == 2
        assert "--threads 0 must be at least 1" in capsys.readouterr().err
        assert not (tmp_path / "t0").exists()
        assert cli.main(["find", "--threads", "1", "--epochs", "1", "--quiet",
                         "--out", str(tmp_path / "t1")]) == 0
        assert torch.get_num_threads() == 1
        assert (tmp_path / "t1" / "report.json").exists()
    finally:
        torch.set_num_threads(before)


def test_find_warns_loudly_when_the_ticket_is_at_chance(tmp_path, capsys):
    # 50 of lenet300's 50,200 weights kept at random: no path from the input reaches the logits
    rc, out, err = _run(["find", "--method", "random", "--sparsity", "0.999", *FAST, "--out",
                         str(tmp_path / "r")], capsys)
    assert rc == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert len(report["warnings"]) == 1 and "is at chance (10.00% for a guess among 10 classes)" in \
        report["warnings"][0]
    assert f"> **WARNING**: {report['warnings'][0]}" in (tmp_path / "r" / "report.md").read_text()
    assert f"torch-slt find: WARNING: {report['warnings'][0]}" in err   # even with --quiet
    assert f"WARNING: {report['warnings'][0]}" in out


def test_find_has_no_warning_for_a_real_ticket(tmp_path, capsys):
    rc, out, err = _run(["find", *FAST, "--out", str(tmp_path / "s")], capsys)
    assert rc == 0 and "WARNING" not in out + err
    assert json.loads((tmp_path / "s" / "report.json").read_text())["warnings"] == []


@pytest.mark.filterwarnings("ignore:.*'magnitude' keeps no weight")
def test_sweep_flags_every_cell_at_chance(tmp_path, capsys):
    rc, out, err = _run(["sweep", "--methods", "random,magnitude", "--sparsities", "0.999", "--no-dense",
                         *FAST, "--out", str(tmp_path / "sw")], capsys)
    assert rc == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "sw" / "sweep.json").read_text())["rows"]}
    for method in ("random", "magnitude"):
        (alarm,) = rows[method]["warnings"]
        assert "is at chance" in alarm
        assert f"torch-slt sweep: WARNING ({method}-0.999): {alarm}" in err
        assert f"> **WARNING** {method} at 100%: {alarm}" in out
        assert f"| {method} | 100% |" in out and out.count("| **WARNING** |") == 2
