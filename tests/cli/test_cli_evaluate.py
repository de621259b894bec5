"""``torch-slt evaluate``, ``sweep --metrics`` and ``torch-slt compare`` end to end on digits."""

import json

import pytest

from torch_slt import cli

LIGHT = ["--severities", "1", "--ood-samples", "100", "--adversarial-samples", "50", "--quiet"]


def _run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    rc = cli.main(["sweep", "--methods", "magnitude,random", "--sparsities", "0.5,0.9", "--epochs", "1",
                   "--batch-size", "128", "--device", "cpu", "--out", str(out), "--metrics", "all", *LIGHT])
    assert rc == 0
    return out


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_new_commands_have_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0 and f"torch-slt {command}" in capsys.readouterr().out


def test_sweep_metrics_evaluates_every_ticket_against_dense(sweep_dir):
    names = {p.name for p in sweep_dir.iterdir()}
    assert {"evaluation.json", "evaluation.md", "metrics.png", "reliability-dense.png"} <= names
    data = json.loads((sweep_dir / "evaluation.json").read_text())
    assert data["dense"]["mce"] == 1.0 and 0.5 < data["dense"]["accuracy"] <= 1
    labels = [r["label"] for r in data["rows"]]
    assert labels == ["magnitude-0.5", "magnitude-0.9", "random-0.5", "random-0.9"]
    for row in data["rows"]:
        assert row["mce"] > 0 and 0 <= row["ece"] <= 1 and len(row["per_class_accuracy"]) == 10
        assert set(row["ood"]) == {"gaussian", "uniform", "vflip"}  # digits is the data itself
    text = (sweep_dir / "evaluation.md").read_text()
    assert "LTH-PASS" in text and "| magnitude-0.9 |" in text


def test_evaluate_a_sweep_folder_again_with_some_metrics(sweep_dir, tmp_path, capsys):
    rc, out, err = _run(["evaluate", str(sweep_dir), "--metrics", "accuracy,ece", "--out", str(tmp_path),
                         "--quiet"], capsys)
    assert rc == 0, err
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert data["metrics"] == ["accuracy", "ece"] and "nll" not in data["rows"][0]
    first = json.loads((sweep_dir / "evaluation.json").read_text())
    assert data["rows"][0]["accuracy"] == first["rows"][0]["accuracy"]  # deterministic
    assert "| magnitude-0.5 |" in out


def test_evaluate_a_ticket_file_needs_the_dataset(sweep_dir, tmp_path, capsys):
    ticket = sweep_dir / "tickets" / "magnitude-0.9.slt.safetensors"
    rc, _, err = _run(["evaluate", str(ticket)], capsys)
    assert rc == 2 and "--dataset" in err
    rc, out, err = _run(["evaluate", str(ticket), "--dataset", "digits", "--metrics",
                         "accuracy,ece,adversarial",
                         "--epsilons", "0,0.1", "--out", str(tmp_path), "--reference",
                         str(sweep_dir / "tickets" / "dense.slt.safetensors"), *LIGHT], capsys)
    assert rc == 0, err
    data = json.loads((tmp_path / "evaluation.json").read_text())
    row = data["rows"][0]
    assert row["fgsm"]["0.0"] >= row["fgsm"]["0.1"]
    assert (tmp_path / "reliability.png").stat().st_size > 0 and "## magnitude-0.9" in out


def test_evaluate_bad_input_exits_2(sweep_dir, tmp_path, capsys):
    rc, _, err = _run(["evaluate", str(sweep_dir), "--metrics", "accuracy,calibration"], capsys)
    assert rc == 2 and "unknown metric 'calibration'" in err
    rc, _, err = _run(["evaluate", str(sweep_dir), "--severities", "0,7"], capsys)
    assert rc == 2 and "--severities" in err
    rc, _, err = _run(["evaluate", str(tmp_path / "nothing")], capsys)
    assert rc == 2 and "does not exist" in err


def test_compare_prints_overlap_and_writes_heatmap(sweep_dir, tmp_path, capsys):
    tickets = sweep_dir / "tickets"
    a, b = tickets / "magnitude-0.9.slt.safetensors", tickets / "magnitude-0.5.slt.safetensors"
    rc, _, err = _run(["compare", str(a), str(b), "--out", str(tmp_path / "x"), "--line"], capsys)
    assert rc == 2 and "--dataset" in err and not (tmp_path / "x").exists()
    rc, out, err = _run(["compare", str(a), str(b), str(a), "--out", str(tmp_path), "--line", "--dataset",
                         "digits"], capsys)
    assert rc == 0, err
    data = json.loads((tmp_path / "compare.json").read_text())
    # global magnitude on one network: the 90 % ticket's kept weights are a subset of the 50 % one's
    assert data["jaccard"][0][1] == pytest.approx(0.1 / 0.5, abs=1e-3)
    assert data["jaccard"][0][2] == 1.0
    assert data["line"]["alphas"][0] == 0.0 and len(data["line"]["loss"]) == 11
    assert {"compare.md", "overlap.png", "profiles.png", "line.png"} <= {p.name for p in tmp_path.iterdir()}
    assert "| magnitude-0.9 | magnitude-0.5 |" in out


def test_compare_a_sweep_folder_expands_to_its_tickets(sweep_dir, tmp_path, capsys):
    rc, out, err = _run(["compare", str(sweep_dir), "--out", str(tmp_path)], capsys)
    assert rc == 0, err
    labels = json.loads((tmp_path / "compare.json").read_text())["tickets"]
    assert labels == ["magnitude-0.5", "magnitude-0.9", "random-0.5", "random-0.9"]
    rc, _, err = _run(["compare", str(sweep_dir / "tickets" / "dense.slt.safetensors")], capsys)
    assert rc == 2 and "at least two" in err
