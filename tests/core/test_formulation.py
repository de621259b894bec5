"""Which formulation made a ticket: labels from the settings, kept by report(), finalize and tickets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.formulation import formulation, formulation_of


def _hook(model: nn.Module):
    return next(h for m in model.modules() for h in m._forward_pre_hooks.values())


@pytest.mark.parametrize("method, kwargs, label", [
    ("stg", {"lam": 0.1}, "stg (paper: lam=0.1)"),
    ("stg", {}, "stg (paper: lam=0.1)"),
    ("stg", {"lam": 1.0, "threshold": 0.6}, "stg (paper: lam=1, threshold=0.6)"),
    ("stg", {"sparsity": 0.9}, "stg + exact target (torch_slt)"),
    ("stg", {"sparsity": 0.5, "granularity": "neuron"}, "stg + exact target (torch_slt: per neuron)"),
    ("hardconcrete", {"lam": 0.5}, "hardconcrete (paper: lam=0.5)"),
    ("hardconcrete", {"mask_rule": "reference"}, "hardconcrete (paper: lam=0.1, reference test gate)"),
    ("hardconcrete", {"sparsity": 0.7}, "hardconcrete + exact target (torch_slt)"),
    ("edgepopup", {"sparsity": 0.5}, "edgepopup (paper: top-k per layer)"),
    ("edgepopup", {"sparsity": 0.5, "scope": "global"}, "edgepopup (global top-k, torch_slt)"),
    ("magnitude", {"sparsity": 0.5, "rounding": "floor"}, "magnitude (global, floor count)"),
    ("supermask", {}, "supermask (paper: Bernoulli samples, hard eval mask)"),
    ("cs", {"lam": 0.3}, "cs (paper: lam=0.3)"),
])
def test_label_from_the_gate_settings(method, kwargs, label):
    model = torch_slt.apply(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)), method, **kwargs)
    assert formulation(_hook(model)) == label
    assert torch_slt.report(model).formulation == label


def test_detail_names_the_target_and_its_lam():
    model = torch_slt.apply(nn.Linear(4, 4), "stg", sparsity=0.9)
    assert formulation(_hook(model), detail=True) == "stg + exact target (torch_slt: sparsity=0.9, lam=8.1)"
    assert formulation_of("stg", {"sparsity": 0.5, "lam": None}, detail=True) == \
        "stg + exact target (torch_slt: sparsity=0.5)"
    assert formulation_of(None, {}) == "dense (every weight trained)"


def test_report_keeps_the_label_after_finalize_and_in_a_saved_ticket(tmp_path):
    from torch_slt.experiment.ticket import ticket_info
    from torch_slt.experiment.zoo import ModelSpec, build_model

    spec = ModelSpec("lenet300", (1, 8, 8), 10, width=0.1, seed=1)
    model = torch_slt.apply(build_model(spec), "stg", lam=1.0)
    with torch.no_grad():
        model[1].weight_mu.view(-1)[:5] = -1.0   # a subnetwork, not the dense network
    before = torch_slt.report(model)
    assert before.to_dict()["formulation"] == "stg (paper: lam=1)"
    assert before.to_markdown().startswith("Formulation: stg (paper: lam=1)\n")
    path = torch_slt.save_ticket(model, tmp_path / "t.slt.safetensors", spec)
    assert ticket_info(path)["formulation"] == {
        "1.weight": "stg (paper: lam=1)", "3.weight": "stg (paper: lam=1)", "5.weight": "stg (paper: lam=1)"}
    torch_slt.finalize(model)
    assert torch_slt.report(model).to_dict() == before.to_dict()
    loaded, _, _ = torch_slt.load_ticket(path)
    assert torch_slt.report(loaded).formulation == "stg (paper: lam=1)"


def test_two_formulations_in_one_model_are_both_named():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    torch_slt.apply(model, "stg", targets="0", lam=0.1)
    torch_slt.apply(model, "magnitude", targets="2", sparsity=0.5)
    assert torch_slt.report(model).formulation == "stg (paper: lam=0.1); magnitude (global)"
