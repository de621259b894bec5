"""The core guarantees of issue 2: apply / penalty / mask_parameters / report / finalize with stg."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_slt
from models import batch, build, logits
from torch_slt.methods.stg import StochasticGates


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert not prune.is_pruned(model)


# ----------------------------------------------------------------------------- the stg gate
def test_state_follows_torch_naming_and_keeps_the_parameter_object():
    model = mlp()
    weight = model[0].weight
    torch_slt.apply(model, "stg")
    layer = model[0]
    assert layer.weight_orig is weight and not weight.requires_grad
    assert isinstance(layer.weight_mu, nn.Parameter) and layer.weight_mu.requires_grad
    assert torch.all(layer.weight_mu == 0.5)
    assert layer.weight_mask.dtype == torch.bool and layer.weight_mask.all()
    assert "weight" not in layer._parameters and isinstance(layer.weight, torch.Tensor)
    torch_slt.finalize(model)
    assert model[0].weight is weight


def test_train_gate_is_clamped_gaussian_and_eval_uses_hard_mask():
    layer = nn.Linear(200, 200, bias=False)
    torch_slt.apply(layer, "stg", sigma=0.5, mu_init=0.3)
    with torch.no_grad():
        layer.weight_mu[:100] = -0.2  # P(z != 0) = Phi(-0.4) < 1/2: dropped by the hard mask
    x = torch.eye(200)
    torch.manual_seed(3)
    z = (layer(x).T / layer.weight_orig).detach()  # the sampled gate, entry by entry
    torch.manual_seed(3)
    noise = torch.randn(200, 200)
    expected = (layer.weight_mu.detach() + 0.5 * noise).clamp(0, 1)
    torch.testing.assert_close(z, expected)
    assert (z == 0).any() and (z == 1).any()
    layer.eval()
    out = layer(x).T
    assert torch.equal(out[:100], torch.zeros(100, 200))
    assert torch.equal(out[100:], layer.weight_orig[100:].detach())
    assert layer.weight_mask[:100].sum() == 0 and layer.weight_mask[100:].all()


def test_hard_mask_is_mu_positive_and_threshold_is_a_probability_on_the_gate():
    layer = nn.Linear(3, 1, bias=False)
    torch_slt.apply(layer, "stg", sigma=0.5)
    with torch.no_grad():
        layer.weight_mu.copy_(torch.tensor([[-0.01, 0.0, 0.01]]))
    hook = next(h for h in layer._forward_pre_hooks.values())
    assert hook.hard_mask(layer).tolist() == [[False, False, True]]
    # threshold=0.84 ~ Phi(1): keep only mu > sigma * 1 = 0.5 (up to the quantile's rounding)
    strict = StochasticGates(threshold=float(torch.special.ndtr(torch.tensor(1.0))))
    assert abs(strict._mu_cut - 0.5) < 1e-6


def test_gradient_reaches_mu_only_inside_the_clamp():
    layer = nn.Linear(2, 1, bias=False)
    torch_slt.apply(layer, "stg", sigma=1e-6)  # almost no noise: the gate is mu itself
    with torch.no_grad():
        layer.weight_orig.copy_(torch.tensor([[2.0, 3.0]]))
        layer.weight_mu.copy_(torch.tensor([[0.5, 1.5]]))  # second gate clamped at 1
    layer(torch.tensor([[1.0, 1.0]])).sum().backward()
    assert layer.weight_mu.grad.tolist() == [[2.0, 0.0]]


def test_weights_biases_and_norms_stay_bitwise_unchanged_while_gates_train():
    model = build("cnn")
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch_slt.apply(model, "stg", lam=0.5)
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.1)
    x, y = batch()
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y) + torch_slt.penalty(model)
        opt.zero_grad()
        loss.backward()
        for name, gate in torch_slt.named_mask_parameters(model):
            assert gate.grad is not None and gate.grad.abs().sum() > 0, name
        opt.step()
    after = {n.replace("weight_orig", "weight"): p for n, p in model.named_parameters()
             if not n.endswith("_mu")}
    assert set(after) == set(params_before)
    for name, value in params_before.items():
        assert torch.equal(after[name], value), name
        assert after[name].grad is None, name
    assert any((g != 0.5).any() for g in torch_slt.mask_parameters(model))


def test_eval_is_deterministic_train_is_noisy_and_seeded():
    model = torch_slt.apply(build("mlp"), "stg")
    x, _ = batch()
    model.train()
    torch.manual_seed(11)
    a = model(x)
    b = model(x)
    torch.manual_seed(11)
    c = model(x)
    assert not torch.equal(a, b)
    assert torch.equal(a, c)
    model.eval()
    assert torch.equal(model(x), model(x))


def test_to_dtype_and_no_grad_forward():
    model = torch_slt.apply(build("mlp"), "stg")
    x, _ = batch()
    with torch.no_grad():
        out = model(x)
    assert out.grad_fn is None and out.shape == (6, 3)
    model.to(torch.float64)
    assert model[1].weight_orig.dtype == torch.float64
    assert model(x.double()).dtype == torch.float64
    model.eval()
    assert model(x.double()).dtype == torch.float64


def test_module_weight_after_forward_is_a_leaf_for_deepcopy():
    model = torch_slt.apply(build("mlp"), "stg")
    model(batch()[0]).sum().backward()
    assert model[1].weight.grad_fn is None
    copy.deepcopy(model)


# ----------------------------------------------------------------------------- penalty
def test_penalty_is_lam_times_expected_kept_fraction():
    model = mlp()
    torch_slt.apply(model, "stg", lam=0.3, sigma=0.5)
    with torch.no_grad():
        model[0].weight_mu.fill_(0.0)   # Phi(0) = 0.5 on 24 gates
        model[2].weight_mu.fill_(0.5)   # Phi(1) on 18 gates
    phi1 = float(torch.special.ndtr(torch.tensor(1.0)))
    expected = 0.3 * (24 * 0.5 + 18 * phi1) / 42
    value = torch_slt.penalty(model)
    assert value.dtype == torch.float32
    assert abs(value.item() - expected) < 1e-6
    value.backward()
    assert model[0].weight_mu.grad is not None and model[0].weight_orig.grad is None


def test_penalty_without_learned_gates_is_a_zero_tensor():
    model = mlp()
    assert torch.equal(torch_slt.penalty(model), torch.tensor(0.0))
    torch_slt.apply(model, "magnitude", sparsity=0.5)
    value = torch_slt.penalty(model)
    assert isinstance(value, torch.Tensor) and float(value) == 0.0


# ----------------------------------------------------------------------------- apply options
def test_freeze_default_true_for_learned_false_for_fixed():
    model = torch_slt.apply(mlp(), "stg")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"0.weight_mu", "2.weight_mu"}
    model = torch_slt.apply(mlp(), "stg", freeze=False)
    assert all(p.requires_grad for p in model.parameters())
    model = torch_slt.apply(mlp(), "magnitude", sparsity=0.5)
    assert all(p.requires_grad for p in model.parameters())
    model = torch_slt.apply(mlp(), "magnitude", sparsity=0.5, freeze=True)
    assert not any(p.requires_grad for p in model.parameters())


def test_finalize_restores_requires_grad_flags():
    model = mlp()
    model[2].bias.requires_grad_(False)  # the user's own choice survives
    torch_slt.apply(model, "stg")
    torch_slt.finalize(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert flags == {"0.weight": True, "0.bias": True, "2.weight": True, "2.bias": False}


@pytest.mark.parametrize("targets,exclude,expected", [
    (None, None, ["0", "2"]),
    ("2", None, ["2"]),                        # exact name
    (["2"], None, ["2"]),
    (None, "0", ["2"]),
    (r"\d", "2", ["0"]),                       # full regex
    (lambda name, m: m.out_features == 3, None, ["2"]),
])
def test_targets_and_exclude(targets, exclude, expected):
    model = torch_slt.apply(mlp(), "stg", targets=targets, exclude=exclude)
    assert [n for n, _, _ in torch_slt.gated_tensors(model)] == expected


def test_targets_match_dotted_suffix_in_a_transformer():
    model = build("hf_vit")
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    first, last = linears[0], linears[-1]    # module names differ across transformers versions
    suffix = ".".join(first.split(".")[-2:])  # e.g. "attention.q_proj"
    torch_slt.apply(model, "stg", targets=[suffix, last])
    assert [n for n, _, _ in torch_slt.gated_tensors(model)] == [first, last]


def test_target_without_weight_matches_nothing():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(torch_slt.NoTargetsError,
                       match=r"targets='1'.*Candidate modules: 0\. Other parameters: 0\.bias$"):
        torch_slt.apply(model, "stg", targets="1")


# ----------------------------------------------------------------------------- bad input
def test_unknown_method_lists_names_and_suggests_closest():
    model = mlp()
    before = snapshot(model)
    with pytest.raises(torch_slt.UnknownMethodError, match="Did you mean 'stg'") as err:
        torch_slt.apply(model, "stgg")
    assert "magnitude" in str(err.value)
    assert_unchanged(model, before)


@pytest.mark.parametrize("kwargs,error,pattern", [
    ({"lam": -0.1}, ValueError, "lam=-0.1 is negative"),
    ({"sigma": 0.0}, ValueError, "sigma=0.0 must be > 0"),
    ({"sigma": -1}, ValueError, "sigma=-1 must be > 0"),
    ({"threshold": 1.0}, ValueError, "threshold=1.0"),
    ({"lr": 0.1}, TypeError, "unknown keyword.*lr.*accepts: amount, granularity, lam"),
    ({"targets": "nope"}, ValueError, "matched no module.*Candidate modules: 0, 2"),
    ({"freeze": "yes"}, TypeError, "freeze must be"),
])
def test_bad_arguments_raise_and_leave_the_model_unchanged(kwargs, error, pattern):
    model = mlp()
    before = snapshot(model)
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(error, match=pattern):
        torch_slt.apply(model, "stg", **kwargs)
    assert_unchanged(model, before)
    assert flags == [p.requires_grad for p in model.parameters()]


def test_non_module_is_refused():
    with pytest.raises(TypeError, match="model must be an nn.Module, got dict"):
        torch_slt.apply({"weight": torch.ones(2)}, "stg")


def test_finalize_on_a_model_never_gated():
    with pytest.raises(torch_slt.NotGatedError, match="call torch_slt.apply"):
        torch_slt.finalize(mlp())


def test_failure_midway_rolls_back_modules_already_gated(monkeypatch):
    model = mlp()
    before = snapshot(model)
    calls = []
    original = StochasticGates.init_state

    def flaky(self, module, *args):
        calls.append(module)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return original(self, module, *args)

    monkeypatch.setattr(StochasticGates, "init_state", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        torch_slt.apply(model, "stg")
    assert_unchanged(model, before)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------- stacking
def test_second_method_on_a_gated_tensor_is_refused():
    model = torch_slt.apply(mlp(), "stg", targets="0")
    before = snapshot(model)
    with pytest.raises(torch_slt.AlreadyGatedError, match="module '0'.*already pruned by 'stg'"):
        torch_slt.apply(model, "magnitude", sparsity=0.5)
    assert list(model.state_dict()) == list(before)
    torch_slt.apply(model, "magnitude", sparsity=0.5, targets="2")  # another tensor is fine
    assert [type(h).name for _, _, h in torch_slt.gated_tensors(model)] == ["stg", "magnitude"]


def test_gating_a_tensor_pruned_by_torch_is_refused():
    model = mlp()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(torch_slt.AlreadyGatedError, match="L1Unstructured.*prune.remove"):
        torch_slt.apply(model, "stg")
    assert not hasattr(model[2], "weight_mu")


def test_torch_prune_stacked_on_a_gate_is_detected():
    model = torch_slt.apply(mlp(), "stg")
    prune.l1_unstructured(model[0], "weight", amount=0.5)  # torch cannot be stopped from doing this
    with pytest.raises(torch_slt.AlreadyGatedError, match="stacked on a torch_slt gate"):
        torch_slt.penalty(model)


def test_torch_prune_remove_finalizes_one_gate_and_deletes_its_tensors():
    model = torch_slt.apply(mlp(), "stg")
    with torch.no_grad():
        model[0].weight_mu[0] = -1.0
    expected = model[0].weight_orig.detach() * (model[0].weight_mu > 0)
    prune.remove(model[0], "weight")
    assert set(model[0]._parameters) == {"weight", "bias"} and not model[0]._buffers
    assert torch.equal(model[0].weight, expected)
    assert [n for n, _, _ in torch_slt.gated_tensors(model)] == ["2"]


# ----------------------------------------------------------------------------- report
def test_report_rows_before_and_after_finalize():
    model = mlp()
    torch_slt.apply(model, "stg")
    with torch.no_grad():
        model[0].weight_mu.view(-1)[:6] = -1.0   # 6 of 24 removed
    rep = torch_slt.report(model)
    assert [(r.name, r.shape, r.kept, r.total, r.method) for r in rep.layers] == [
        ("0.weight", (6, 4), 18, 24, "stg"), ("2.weight", (3, 6), 18, 18, "stg")]
    assert rep.sparsity == pytest.approx(6 / 42)
    d = rep.to_dict()
    assert d["kept"] == 36 and d["layers"][0]["sparsity"] == pytest.approx(0.25)
    md = rep.to_markdown()
    assert "| 0.weight | 6x4 | stg | 18 | 24 | 25.00% |" in md and "14.29%" in md
    torch_slt.finalize(model)
    assert torch_slt.report(model).to_dict() == d


def test_report_on_a_plain_model_counts_zeros_of_default_targets():
    model = mlp()
    with torch.no_grad():
        model[2].weight[0] = 0.0
    rep = torch_slt.report(model)
    assert [(r.name, r.kept, r.method) for r in rep.layers] == [("0.weight", 24, None), ("2.weight", 12, None)]


def test_list_methods_and_get_method():
    names = torch_slt.list_methods()
    assert names == sorted(names) and {"stg", "magnitude"} <= set(names)
    assert torch_slt.get_method("STG") is StochasticGates
    assert torch_slt.get_method(StochasticGates) is StochasticGates
    with pytest.raises(TypeError, match="pass the class or its name"):
        torch_slt.get_method(StochasticGates())


def test_hf_model_output_logits_after_finalize_match():
    model = torch_slt.apply(build("hf_swin"), "stg")
    model.eval()
    x, _ = batch()
    with torch.no_grad():
        before = logits(model(x))
    torch_slt.finalize(model)
    with torch.no_grad():
        assert torch.equal(logits(model(x)), before)


def test_apply_draws_no_gate_noise_from_the_global_rng():
    model = mlp()
    state = torch.get_rng_state()
    torch_slt.apply(model, "stg")
    assert torch.equal(state, torch.get_rng_state())


def test_layer_collapse_warns_and_names_the_layer():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.mul_(1e-3)  # globally the smallest: a 70% global cut removes all 8
    with pytest.warns(UserWarning, match=r"keeps no weight of '1'.*lower sparsity"):
        torch_slt.apply(model, "magnitude", sparsity=0.7)
    assert not model[1].weight_mask.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch_slt.apply(mlp(), "magnitude", sparsity=0.5, scope="layer")
