"""torch-slt find --granularity neuron --compact: a structured ticket and its compact model."""

import json

import pytest
import torch

from torch_slt import cli
from torch_slt.experiment.data import load_dataset

pytest.importorskip("torch_pruning")


def test_find_with_granularity_and_compact_writes_a_smaller_equal_model(tmp_path, capsys):
    out = tmp_path / "run"
    # scope=layer: a global L1 ranking of neurons favours wide fan-ins and would close layer 1 entirely.
    rc = cli.main(["find", "--method", "magnitude", "--sparsity", "0.5", "--granularity", "neuron",
                   "--method-arg", "scope=layer", "--compact", "--epochs", "1", "--batch-size", "64",
                   "--quiet", "--device", "cpu",
                   "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["kwargs"]["granularity"] == "neuron"
    compact = json.loads((out / "compact.json").read_text())
    assert compact["params_after"] < compact["params_before"]
    assert compact["test_accuracy"] == pytest.approx(report["accuracy"]["test"], abs=1e-9)
    small = torch.load(out / "compact_model.pt", weights_only=False)
    x, _ = load_dataset("digits", seed=0).test.tensors()
    assert small(x[:4]).shape == (4, 10)


def test_granularity_on_a_method_without_groups_is_a_flag_error(tmp_path, capsys):
    rc = cli.main(["find", "--method", "snip", "--sparsity", "0.5", "--granularity", "neuron",
                   "--out", str(tmp_path / "r")])
    assert rc == 2
    assert "--granularity does not apply to method 'snip'" in capsys.readouterr().err
