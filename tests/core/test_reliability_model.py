"""Issue 20, model level: nothing silently wrong. Non-finite scores, clashing names, collapsed masks,
non-finite evaluations, requires_grad after partial finalizes, checkpoints of another method or size,
and the tracebacks that became clear errors (each test fails on the code before the fix)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_slt
from torch_slt.core.errors import (MethodMismatchError, NoTargetsError, NonFiniteError,
                                   UnsupportedModelError)
from torch_slt.core.registry import get_method
from torch_slt.evaluation.context import EvaluationInputError


def _mlp(hidden: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def _snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, snapshot: dict) -> bool:
    now = model.state_dict()
    return now.keys() == snapshot.keys() and all(torch.equal(now[k], snapshot[k]) for k in now)


def _problems(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


# ------------------------------------------------------------------------------ item 4: scores
@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_data_scorers_refuse_a_batch_with_a_nan_row(method):
    model, x, y = _mlp(), torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    x[3] = float("nan")
    before = _snapshot(model)
    with pytest.raises(NonFiniteError, match=r"inputs hold 4 NaN"):
        torch_slt.apply(model, method, sparsity=0.5, data=[(x[:3], y[:3]), (x[3:], y[3:])])
    assert not torch_slt.is_gated(model) and _same(model, before)


def test_a_nan_weight_is_refused_by_every_scorer_that_reads_it():
    for method, kwargs in [("magnitude", {}), ("magnitude", {"granularity": "neuron"}),
                           ("synflow", {"input_shape": (4,), "iterations": 2}),
                           ("snip", {"data": (torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))})]:
        model = _mlp()
        with torch.no_grad():
            model[0].weight[2, 1] = float("nan")
        with pytest.raises(NonFiniteError, match=r"0\.weight|loss on a data batch is nan"):
            torch_slt.apply(model, method, sparsity=0.5, **kwargs)
        assert not torch_slt.is_gated(model), method
    layer = nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="Linear.weight"):  # torch style, one module
        get_method("magnitude").apply(layer, "weight", sparsity=0.5)
    assert isinstance(layer._parameters["weight"], nn.Parameter) and not hasattr(layer, "weight_mask")


def test_finite_scores_pick_the_same_masks_as_before():
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    model = torch_slt.apply(_mlp(), "snip", sparsity=0.5, data=(x, y))
    assert torch_slt.report(model).kept == (32 + 24) // 2


# ------------------------------------------------------------------------------ item 5: names
_NAMES = {"stg": ["orig", "mask", "mu", "step"], "hardconcrete": ["log_alpha", "step"],
          "supermask": ["scores", "step"], "edgepopup": ["scores"], "cs": ["scores", "beta", "step"],
          "magnitude": ["orig", "mask"], "random": ["mask"]}


@pytest.mark.parametrize("method,suffix", [(m, s) for m, names in _NAMES.items() for s in names])
@pytest.mark.parametrize("kind", ["buffer", "parameter"])
def test_a_user_tensor_named_like_a_gate_tensor_is_refused(method, suffix, kind):
    model = _mlp()
    mine = torch.full((3,), 7.0)
    if kind == "buffer":
        model[2].register_buffer(f"weight_{suffix}", mine)
    else:
        model[2].register_parameter(f"weight_{suffix}", nn.Parameter(mine))
    before = _snapshot(model)
    kwargs = {"sparsity": 0.5} if method in ("edgepopup", "magnitude", "random") else {}
    with pytest.raises(UnsupportedModelError, match=rf"'2'.*'weight_{suffix}'.*{method}"):
        torch_slt.apply(model, method, **kwargs)
    assert not torch_slt.is_gated(model) and _same(model, before)
    assert getattr(model[2], f"weight_{suffix}").data_ptr() == mine.data_ptr() or kind == "parameter"


def test_a_name_clash_is_refused_by_the_torch_style_apply_too():
    layer = nn.Linear(3, 2)
    layer.register_buffer("weight_mask", torch.ones(1))
    with pytest.raises(UnsupportedModelError, match="weight_mask"):
        get_method("stg").apply(layer, "weight")
    assert torch.equal(layer.weight_mask, torch.ones(1))
    assert isinstance(layer._parameters["weight"], nn.Parameter)


# ------------------------------------------------------------------------------ item 7: collapse
def test_every_gate_of_one_layer_closed_warns_at_report_and_finalize():
    model = torch_slt.apply(_mlp(), "stg")
    with torch.no_grad():
        model[0].weight_mu.fill_(-1.0)
        model[2].weight_mu.uniform_(-1.0, 1.0)
        model[2].weight_mu[0, 0] = 1.0
    model.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch_slt.report(model)
        torch_slt.finalize(model)
    found = [p for p in _problems(caught) if "keeps no weight of '0.weight'" in p]
    assert len(found) == 2 and found[0].startswith("report()") and found[1].startswith("finalize()")
    assert torch.count_nonzero(model[0].weight) == 0


def test_a_large_penalty_trained_to_full_sparsity_warns():
    model = torch_slt.apply(_mlp(), "stg", lam=50.0)
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=5e-2)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + torch_slt.penalty(model)
        loss.backward()
        opt.step()
    model.eval()
    assert torch_slt.report(model).kept == 0
    with pytest.warns(UserWarning, match=r"finalize\(\): the ticket keeps no weight at all \('stg'"):
        torch_slt.finalize(model)


def test_supermask_before_training_and_a_threshold_keeping_nothing_warn():
    x, y = torch.rand(12, 4), torch.randint(0, 3, (12,))
    model = torch_slt.apply(_mlp(), "supermask")
    with pytest.warns(UserWarning, match=r"evaluate\(\): the ticket keeps no weight at all \('supermask'"):
        torch_slt.evaluate(model, (x, y), metrics=["accuracy"])
    model = torch_slt.apply(_mlp(), "stg", threshold=0.9999999).eval()
    with pytest.warns(UserWarning, match=r"report\(\): the ticket keeps no weight at all"):
        assert torch_slt.report(model).kept == 0


def test_head_granularity_keeping_no_row_warns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True))
    torch_slt.apply(model, "stg", granularity="head", targets=["*.in_proj_weight"])
    with torch.no_grad():
        model[0].in_proj_weight_mu.fill_(-1.0)
    model.eval()
    with pytest.warns(UserWarning, match=r"keeps no weight at all"):
        torch_slt.report(model)


def test_a_healthy_ticket_does_not_warn_about_collapse():
    model = torch_slt.apply(_mlp(), "stg")
    with torch.no_grad():
        for p in torch_slt.mask_parameters(model):
            p.uniform_(-1, 1)
    model.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch_slt.finalize(model)
    assert not [p for p in _problems(caught) if "keeps no weight" in p]


# ------------------------------------------------------------------------------ item 8: evaluate
def test_evaluate_refuses_non_finite_outputs_and_out_of_range_labels():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(30, 1, 4, 4), torch.randint(0, 3, (30,))
    with torch.no_grad():
        model[1].weight[1, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"outputs for 30 of 30 test inputs hold NaN"):
        torch_slt.evaluate(model, (x, y), metrics=["accuracy", "nll"])
    clean = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    bad_x = x.clone()
    bad_x[4, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="1 of 30.*inputs themselves"):
        torch_slt.evaluate(clean, (bad_x, y), metrics=["accuracy"])
    with pytest.raises(EvaluationInputError, match=r"outside 0\.\.2 .*: -1, 3"):
        torch_slt.evaluate(clean, (x, torch.where(y == 0, -1, y).index_fill(0, torch.tensor([1]), 3)),
                           metrics=["nll"])


# ------------------------------------------------------------------------------ item 10: flags
def _flags(model: nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


def test_requires_grad_comes_back_after_prune_remove_then_finalize():
    model = torch_slt.apply(_mlp(), "stg")
    for _, module, hook in list(torch_slt.core.api.gated_tensors(model)):
        prune.remove(module, hook._tensor_name)
    torch_slt.finalize(model)
    assert all(_flags(model).values())
    with pytest.raises(torch_slt.core.errors.NotGatedError):
        torch_slt.finalize(model)  # nothing left to restore: still an error


def test_requires_grad_comes_back_after_finalizing_each_submodule():
    model = torch_slt.apply(_mlp(), "stg")
    torch_slt.finalize(model[0])
    assert _flags(model) == {"0.weight": True, "0.bias": True, "2.weight_orig": False, "2.bias": False,
                             "2.weight_mu": True}
    torch_slt.finalize(model[2])
    assert all(_flags(model).values())


def test_requires_grad_comes_back_after_apply_on_a_submodule_then_on_the_root():
    model = _mlp()
    model[1] = nn.LayerNorm(8)
    torch_slt.apply(model[0], "stg")
    torch_slt.apply(model, "stg", targets=["2"])
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.endswith("_mu"))
    copied = copy.deepcopy(model)
    for m in (model, copied):
        torch_slt.finalize(m)
        assert all(_flags(m).values())


def test_a_parameter_frozen_by_the_user_stays_frozen():
    model = _mlp()
    model[0].bias.requires_grad_(False)
    torch_slt.finalize(torch_slt.apply(model, "stg"))
    assert _flags(model) == {"0.weight": True, "0.bias": False, "2.weight": True, "2.bias": True}


# ------------------------------------------------------------------------------ item 11: methods
@pytest.mark.parametrize("saved,loaded", [("edgepopup", "supermask"), ("stg", "hardconcrete")])
def test_a_checkpoint_of_another_method_is_refused_naming_both(saved, loaded):
    src = torch_slt.apply(_mlp(), saved, **({"sparsity": 0.5} if saved == "edgepopup" else {}))
    state = src.state_dict()
    for load in (lambda m: m.load_state_dict(state), lambda m: torch_slt.load_state_dict(m, state)):
        dst = torch_slt.apply(_mlp(), loaded)
        before = _snapshot(dst)
        match = rf"saved from a '{saved}' gate.*gates it with '{loaded}'"
        with pytest.raises(MethodMismatchError, match=match):
            load(dst)
        assert _same(dst, before)
    fresh = _mlp()
    assert not torch_slt.load_state_dict(fresh, state).missing_keys  # the right way still works
    same = torch_slt.apply(_mlp(), saved, **({"sparsity": 0.5} if saved == "edgepopup" else {}))
    same.load_state_dict(state)


def test_a_checkpoint_of_a_wider_model_is_refused_before_gating():
    state = torch_slt.apply(_mlp(8), "stg").state_dict()
    narrow = _mlp(6)
    before = _snapshot(narrow)
    with pytest.raises(ValueError, match=r"0\.weight_orig: checkpoint \(8, 4\), model \(6, 4\).*nothing was"):
        torch_slt.load_state_dict(narrow, state)
    assert not torch_slt.is_gated(narrow) and _same(narrow, before)


# ------------------------------------------------------------------------------ item 12 and 0-size layers
def test_layers_with_no_weight_are_left_out_and_the_penalty_stays_finite():
    model = nn.Sequential(nn.Linear(4, 0), nn.Linear(0, 3), nn.Linear(3, 2))
    torch_slt.apply(model, "stg", sparsity=0.5)
    assert [n for n, _, _ in torch_slt.core.api.gated_tensors(model)] == ["2"]
    model.train()
    model(torch.randn(2, 4))
    assert torch.isfinite(torch_slt.penalty(model))
    for method in ("stg", "hardconcrete", "cs"):
        with pytest.raises(NoTargetsError, match=r"every selected tensor has no weight \(0\.weight \(0, 4\)"):
            torch_slt.apply(nn.Sequential(nn.Linear(4, 0), nn.Linear(0, 2)), method)


# ------------------------------------------------------------------------------ tracebacks
def test_finalize_inside_inference_mode_leaves_trainable_tensors():
    model = torch_slt.apply(_mlp(), "stg").eval()
    with torch.inference_mode():
        expected = model(torch.ones(2, 4))
        torch_slt.finalize(model)
    assert not any(p.is_inference() for p in model.parameters())
    assert torch.equal(model(torch.ones(2, 4)), expected)
    model(torch.ones(2, 4)).sum().backward()
    assert model[0].weight.grad is not None


def test_the_meta_device_gates_learned_masks_and_refuses_value_masks_clearly():
    model = _mlp().to("meta")
    torch_slt.apply(model, "stg")
    assert model.train()(torch.ones(2, 4, device="meta")).shape == (2, 3)
    for method in ("magnitude", "random"):
        meta = _mlp().to("meta")
        with pytest.raises(UnsupportedModelError, match=rf"'{method}'.*meta device.*to_empty"):
            torch_slt.apply(meta, method, sparsity=0.5)
        assert not torch_slt.is_gated(meta)


def test_a_sparse_embedding_is_refused_for_learned_gates():
    for method in ("stg", "hardconcrete", "cs", "supermask"):
        model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Linear(4, 2))
        with pytest.raises(UnsupportedModelError, match=r"Embedding\(sparse=True\).*sparse=False"):
            torch_slt.apply(model, method, targets=["0", "1"])
        assert not torch_slt.is_gated(model)
    model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Linear(4, 2))
    torch_slt.apply(model, "magnitude", sparsity=0.5, targets=["0", "1"])
    model(torch.tensor([[1, 2]])).sum().backward()
    assert model[0].weight_orig.grad.is_sparse


def test_cs_refuses_a_mask_init_whose_sigmoid_underflows():
    with pytest.raises(ValueError, match=r"mask_init=-1000 is below -80"):
        torch_slt.apply(nn.Linear(3, 2), "cs", mask_init=-1000)
    layer = torch_slt.apply(nn.Linear(3, 2), "cs", mask_init=-80)
    assert torch.isfinite(layer.train()(torch.ones(1, 3))).all()


@pytest.mark.parametrize("method", ["supermask", "cs"])
def test_torch_func_grad_over_functional_call_in_train_mode(method):
    model = torch_slt.apply(_mlp(), method).train()
    x = torch.randn(5, 4)
    params = {k: v.detach() for k, v in model.named_parameters()}
    torch.manual_seed(1)
    grads = torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).pow(2).sum())(params)
    torch.manual_seed(1)
    model(x).pow(2).sum().backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.allclose(grads[name], param.grad), name


def test_torch_func_in_train_mode_is_refused_clearly_where_unsupported_and_works_in_eval():
    model = torch_slt.apply(_mlp(), "stg")
    x = torch.randn(5, 4)
    params = {k: v.detach() for k, v in model.named_parameters()}
    loss = lambda p: torch.func.functional_call(model, p, (x,)).pow(2).sum()  # noqa: E731
    with pytest.raises(UnsupportedModelError, match=r"torch\.func.*'stg'.*model\.eval\(\)"):
        torch.func.grad(loss)(params.copy())
    model.eval()
    assert set(torch.func.grad(loss)(params)) == set(params)


def test_torch_jit_script_is_refused_on_a_gated_model_and_works_after_finalize():
    model = torch_slt.apply(_mlp(), "stg")
    with pytest.raises(UnsupportedModelError, match=r"torch\.jit\.script\(\).*finalize"):
        torch.jit.script(model)
    torch_slt.finalize(model)
    assert "__prepare_scriptable__" not in model[0].__dict__
    scripted = torch.jit.script(model)
    assert torch.equal(scripted(torch.ones(1, 4)), model(torch.ones(1, 4)))


def test_numpy_scalars_are_accepted_as_numbers():
    layer = torch_slt.apply(nn.Linear(3, 2), "hardconcrete", droprate_init=np.float32(0.5),
                            lam=np.float64(0.1))
    hook = next(torch_slt.core.api.gated_tensors(layer))[2]
    assert hook.droprate_init == 0.5 and type(hook.droprate_init) is float
    torch_slt.apply(nn.Linear(3, 2), "stg", lam=np.float32(0.5), sigma=np.float16(0.5))
    torch_slt.apply(nn.Linear(3, 2), "magnitude", sparsity=np.float32(0.5))
    torch_slt.apply(nn.Linear(3, 2), "random", sparsity=0.5, seed=np.int64(3))
    torch_slt.apply(nn.Linear(3, 2), "cs", total_steps=np.int64(10))
    with pytest.raises(TypeError, match="must be a number"):
        torch_slt.apply(nn.Linear(3, 2), "stg", lam=np.bool_(True))


def test_the_command_line_warns_when_the_ticket_keeps_nothing(tmp_path, capsys):
    from torch_slt import cli

    argv = ["find", "--method", "stg", "--method-arg", "threshold=0.9999999", "--epochs", "1", "--batch-size",
            "64", "--quiet", "--device", "cpu", "--out", str(tmp_path / "run")]
    with pytest.warns(UserWarning, match=r"finalize\(\): the ticket keeps no weight at all \('stg'"):
        assert cli.main(argv) == 0
    capsys.readouterr()


def test_a_checkpoint_that_does_not_fit_leaves_the_model_ungated_and_unloaded():
    state = torch_slt.apply(_mlp(), "stg").state_dict()
    del state["2.bias"]
    state["extra.weight"] = torch.zeros(1)
    model = _mlp()
    model[0].bias.requires_grad_(False)
    before, flags = _snapshot(model), _flags(model)
    with pytest.raises(RuntimeError, match=r"missing 2\.bias; unexpected extra\.weight.*nothing was gated"):
        torch_slt.load_state_dict(model, state)
    assert not torch_slt.is_gated(model) and _same(model, before) and _flags(model) == flags
    assert not any("_slt_frozen" in m.__dict__ for m in model.modules())
    assert torch_slt.load_state_dict(model, state, strict=False).missing_keys == ["2.bias"]


def test_torch_func_runs_cs_with_a_temperature_schedule_and_remove_gates_after_prune_remove():
    model = torch_slt.apply(_mlp(), "cs", total_steps=5).train()
    x = torch.ones(2, 4)
    params = {k: v.detach() for k, v in model.named_parameters()}
    grads = torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).sum())(params)
    model(x).sum().backward()
    assert torch.allclose(grads["0.weight_scores"], model[0].weight_scores.grad)
    gated = torch_slt.apply(_mlp(), "stg")
    for _, module, hook in list(torch_slt.core.api.gated_tensors(gated)):
        prune.remove(module, hook._tensor_name)
    torch_slt.core.masks.remove_gates(gated)
    assert all(_flags(gated).values())


def test_the_training_accuracy_helper_warns_about_non_finite_outputs():
    from torch_slt.experiment.train import accuracy

    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    with torch.no_grad():
        model[0].bias[1] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"outputs for 10 of 10 inputs hold NaN"):
        accuracy(model, [(x, y)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accuracy(nn.Sequential(nn.Linear(4, 3)), [(x, y)])
