"""Issue 14: faults that used to go wrong silently: non-finite gates and hyperparameters,
parametrized weights, lazy modules."""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, prune

import torch_slt
from cases import METHOD_CASES
from torch_slt.experiment.train import TrainConfig, fit

LEARNED = [m for m in torch_slt.list_methods() if torch_slt.get_method(m).learned]
DATA = (torch.randn(8, 4), torch.randint(0, 3, (8,)))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def nan_step(model: nn.Module, lr: float = 0.01) -> None:
    """One optimisation step on a batch with a single NaN input, as a careful user would hit it."""
    x = torch.randn(5, 4)
    x[0, 0] = float("nan")
    opt = torch.optim.SGD(torch_slt.mask_parameters(model), lr=lr)
    model.train()
    loss = nn.functional.cross_entropy(model(x), torch.zeros(5, dtype=torch.long)) + torch_slt.penalty(model)
    loss.backward()
    opt.step()


# ------------------------------------------------------------------------------ non-finite gates
@pytest.mark.parametrize("method", LEARNED)
def test_nan_gates_make_finalize_refuse_and_report_warn_naming_the_layers(method):
    model = torch_slt.apply(mlp(), method, **METHOD_CASES[method](DATA))
    nan_step(model)
    before = snapshot(model)
    with pytest.warns(RuntimeWarning, match=r"report\(\): the gate tensors 0\.weight_\w+, 2\.weight_\w+ "
                                            r"hold NaN"):
        torch_slt.report(model)
    with pytest.raises(torch_slt.NonFiniteGateError, match="GradScaler") as err:
        torch_slt.finalize(model)
    assert err.value.names[0].startswith("0.weight_") and isinstance(err.value, ValueError)
    assert torch_slt.is_gated(model)  # refused before anything was removed
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) or (v.isnan().any() and torch.equal(after[k].isnan(), v.isnan()))
               for k, v in before.items())


def test_save_ticket_of_nan_gates_is_refused(tmp_path):
    from torch_slt.experiment.ticket import save_ticket
    from torch_slt.experiment.zoo import ModelSpec, build_model

    spec = ModelSpec("lenet300", (1, 8, 8), 10, width=0.05, seed=0)
    model = torch_slt.apply(build_model(spec), "stg")
    for p in torch_slt.mask_parameters(model):
        p.data[0] = float("nan")
    with pytest.raises(torch_slt.NonFiniteGateError):
        save_ticket(model, tmp_path / "t.slt.safetensors", spec)
    assert not (tmp_path / "t.slt.safetensors").exists()


def test_finite_gates_report_without_warning_and_an_inf_gate_is_caught():
    model = torch_slt.apply(mlp(), "stg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch_slt.report(model)
    model[2].weight_mu.data[1, 1] = float("inf")
    with pytest.raises(torch_slt.NonFiniteGateError, match="2.weight_mu hold") as err:
        torch_slt.finalize(model)
    assert err.value.names == ["2.weight_mu"]


def test_a_nan_gate_under_a_sparsity_target_is_caught():
    model = torch_slt.apply(mlp(), "stg", sparsity=0.5)
    model[0].weight_mu.data[0, 0] = float("nan")
    with pytest.raises(torch_slt.NonFiniteGateError, match="0.weight_mu"):
        torch_slt.finalize(model)
    assert torch_slt.is_gated(model)


def test_fit_stops_at_the_end_of_the_epoch_that_made_gates_nan(tmp_path):
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    good = torch.utils.data.TensorDataset(x, y)
    bad_x = x.clone()
    bad_x[3, 1] = float("nan")
    bad = torch.utils.data.TensorDataset(bad_x, y)
    model = torch_slt.apply(mlp(), "stg")
    ckpt = tmp_path / "ckpt.pt"
    fit(model, good, config=TrainConfig(epochs=1, batch_size=8, quiet=True), checkpoint=ckpt)
    saved = ckpt.read_bytes()
    with pytest.raises(torch_slt.NonFiniteGateError, match=r"fit\(\): after epoch 1: .*0\.weight_mu"):
        fit(model, bad, config=TrainConfig(epochs=1, batch_size=8, quiet=True), checkpoint=ckpt)
    assert ckpt.read_bytes() == saved  # the last good checkpoint is kept


def test_grad_scaler_skipping_non_finite_steps_keeps_gates_usable():
    """Mixed precision: GradScaler skips the step whose gradients are inf/NaN, so the gates stay finite
    and the checks never fire; the next good step trains normally."""
    model = torch_slt.apply(mlp(), "stg")
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    mu_before = model[0].weight_mu.detach().clone()
    for poisoned in (True, False):
        x = torch.randn(6, 4)
        if poisoned:
            x[0, 0] = float("inf")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().logsumexp(1).mean() + torch_slt.penalty(model)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if poisoned:
            assert torch.equal(model[0].weight_mu, mu_before)  # the step was skipped
    assert not torch.equal(model[0].weight_mu, mu_before)     # the good step was taken
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch_slt.report(model)
    torch_slt.finalize(model)
    assert not torch_slt.is_gated(model)


# ------------------------------------------------------------------------------ hyperparameters
def _float_hyperparameters() -> list[tuple[str, str]]:
    """Every (method, keyword) whose value is a real number: float defaults, lam, sparsity, amount."""
    cases = []
    for method in torch_slt.list_methods():
        params = inspect.signature(torch_slt.get_method(method).__init__).parameters
        for name, p in params.items():
            if name.startswith("_") or name == "self":
                continue
            if isinstance(p.default, float) or name in ("lam", "sparsity", "amount"):
                cases.append((method, name))
    return cases


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("method,name", _float_hyperparameters())
def test_every_non_finite_hyperparameter_is_refused_by_name(method, name, value):
    kwargs = METHOD_CASES[method](DATA)
    if name == "amount":
        kwargs.pop("sparsity", None)
    kwargs[name] = value
    model = mlp()
    before = snapshot(model)
    with pytest.raises((ValueError, TypeError), match=rf"{name}=|{name} must"):
        torch_slt.apply(model, method, **kwargs)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert not prune.is_pruned(model)


def test_lam_inf_names_the_value_and_is_an_slt_error():
    with pytest.raises(torch_slt.NonFiniteError, match=r"stg: lam=inf is not a finite number"):
        torch_slt.apply(mlp(), "stg", lam=float("inf"))


# ------------------------------------------------------------------------------ parametrized weights
PARAMETRIZATIONS = {
    "weight_norm": (parametrizations.weight_norm, "parametrizations.weight_norm",
                    "remove_parametrizations"),
    "spectral_norm": (parametrizations.spectral_norm, "parametrizations.spectral_norm",
                      "remove_parametrizations"),
    "old_weight_norm": (torch.nn.utils.weight_norm, "torch.nn.utils.weight_norm", "remove_weight_norm"),
    "old_spectral_norm": (torch.nn.utils.spectral_norm, "torch.nn.utils.spectral_norm",
                          "remove_spectral_norm"),
}


@pytest.mark.filterwarnings("ignore:.*is deprecated")
@pytest.mark.parametrize("kind", list(PARAMETRIZATIONS))
def test_parametrized_weight_is_refused_naming_the_parametrization_and_the_fix(kind):
    wrap, what, fix = PARAMETRIZATIONS[kind]
    model = mlp()
    wrap(model[0])
    before = snapshot(model)
    with pytest.raises(torch_slt.UnsupportedModelError, match=rf"module '0' .*computed by .*{what}.*{fix}"):
        torch_slt.apply(model, "stg")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert not torch_slt.is_gated(model)
    # The functional form refuses with the same words.
    with pytest.raises(torch_slt.UnsupportedModelError, match=what):
        torch_slt.get_method("magnitude").apply(model[0], "weight", sparsity=0.5)


def test_baking_the_parametrization_in_then_gating_works():
    model = mlp()
    parametrizations.weight_norm(model[0])
    effective = model[0].weight.detach().clone()
    torch.nn.utils.parametrize.remove_parametrizations(model[0], "weight")
    torch_slt.apply(model, "magnitude", sparsity=0.5)
    assert torch.equal(model[0].weight_orig, effective)


def test_excluding_the_parametrized_module_gates_the_rest():
    model = mlp()
    parametrizations.spectral_norm(model[0])
    torch_slt.apply(model, "stg", exclude="0")
    assert [n for n, _, _ in torch_slt.gated_tensors(model)] == ["2"]


# ------------------------------------------------------------------------------ lazy modules
def test_lazy_linear_before_its_first_forward_is_refused_with_the_fix():
    model = nn.Sequential(nn.LazyLinear(6), nn.ReLU(), nn.Linear(6, 3))
    with pytest.raises(torch_slt.UnsupportedModelError, match=r"module '0': LazyLinear.weight is not "
                                                              r"initialized.*Run one forward pass first"):
        torch_slt.apply(model, "magnitude", sparsity=0.5)
    assert not torch_slt.is_gated(model) and "weight" in model[0]._parameters
    with pytest.raises(torch_slt.UnsupportedModelError, match="Run one forward pass first"):
        torch_slt.get_method("stg").apply(model[0], "weight")
    model(torch.randn(2, 4))
    torch_slt.apply(model, "stg")
    assert model[0].weight_mu.shape == (6, 4)


@pytest.mark.parametrize("method", LEARNED)
def test_torch_prune_remove_of_a_nan_gate_is_refused_too(method):
    model = torch_slt.apply(mlp(), method, **METHOD_CASES[method](DATA))
    nan_step(model)
    with pytest.raises(torch_slt.NonFiniteGateError, match=r"prune.remove\(Linear, 'weight'\).*weight_"):
        prune.remove(model[0], "weight")
    assert "weight_orig" in model[0]._parameters and torch_slt.is_gated(model)
