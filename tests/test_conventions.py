"""The public API's conventions (docs/api.md, "Conventions"), one test each, and their old spellings."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import torch_slt
from torch_slt import prune
from torch_slt.core import registry
from torch_slt.core.errors import SLTError

ROOT = Path(__file__).resolve().parent.parent


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def ticket(sparsity: float = 0.5, granularity: str = "weight") -> nn.Sequential:
    return torch_slt.finalize(torch_slt.apply(mlp(), "magnitude", sparsity=sparsity, scope="layer",
                                              granularity=granularity))


# ------------------------------------------------------------------ in place or a copy: what comes back
def test_in_place_functions_return_the_module_itself():
    model = mlp()
    assert torch_slt.apply(model, "magnitude", sparsity=0.5) is model
    assert torch_slt.finalize(model) is model
    sparse = ticket(0.95)
    out = torch_slt.to_sparse(sparse, min_sparsity=0.9, check_speed=False, return_report=False)
    assert out is sparse and type(out[0]).__name__ == "SparseLinear"
    assert out.sparse_export_report.converted == ["0", "2"]
    assert "sparse_export_report" not in str(list(out.state_dict()))


def test_compact_returns_a_smaller_copy_with_its_report():
    pytest.importorskip("torch_pruning")
    model = ticket(0.5, granularity="neuron")
    small = torch_slt.compact(model, torch.randn(4, 4), return_report=False)
    assert isinstance(small, nn.Module) and small is not model
    assert small[0].out_features == 4 and model[0].out_features == 8      # the input is untouched
    assert small.compact_report.params_after < small.compact_report.params_before
    assert not hasattr(model, "compact_report")


def test_the_old_pair_is_kept_for_one_release_with_a_future_warning():
    pytest.importorskip("torch_pruning")
    with pytest.warns(FutureWarning, match="return_report=False"):
        small, report = torch_slt.compact(ticket(0.5, granularity="neuron"), torch.randn(4, 4))
    assert report is small.compact_report
    with pytest.warns(FutureWarning, match="return_report=False"):
        net, report = torch_slt.to_sparse(ticket(0.95), check_speed=False)
    assert report is net.sparse_export_report
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net, report = torch_slt.to_sparse(ticket(0.95), check_speed=False, return_report=True)
    assert report.converted == ["0", "2"]


def test_a_bad_return_report_is_refused_before_the_model_changes():
    net = ticket(0.95)
    with pytest.raises(TypeError, match="return_report must be True, False or None"):
        torch_slt.to_sparse(net, check_speed=False, return_report="yes")
    assert type(net[0]) is nn.Linear and not hasattr(net, "sparse_export_report")


# ------------------------------------------------------------------ iterators
def test_mask_parameters_is_an_iterator_like_parameters():
    model = torch_slt.apply(mlp(), "stg", lam=0.1)
    plain, named = torch_slt.mask_parameters(model), torch_slt.named_mask_parameters(model)
    assert iter(plain) is plain and iter(named) is named       # iterators, as nn.Module.parameters()
    assert [id(p) for p in plain] == [id(p) for _, p in named] == [id(model[0].weight_mu),
                                                                     id(model[2].weight_mu)]
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.1)   # optimisers take it as is
    assert [p for group in opt.param_groups for p in group["params"]] == [model[0].weight_mu,
                                                                            model[2].weight_mu]


def test_what_code_for_the_old_list_asks_still_answers_with_a_future_warning():
    model = torch_slt.apply(mlp(), "stg", lam=0.1)
    gates = [model[0].weight_mu, model[2].weight_mu]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # the new spellings never warn
        assert list(torch_slt.mask_parameters(model)) == gates
        torch.nn.utils.clip_grad_norm_(torch_slt.mask_parameters(model), 1.0)
    with pytest.warns(FutureWarning, match=r"use list\(torch_slt.mask_parameters\(model\)\)"):
        assert torch_slt.mask_parameters(model)[1] is gates[1]
    with pytest.warns(FutureWarning, match="truth value"):
        assert not torch_slt.mask_parameters(mlp())      # an ungated model: no gates, as [] was
    with pytest.warns(FutureWarning, match="comparing it with a list"):
        assert torch_slt.mask_parameters(model) == gates
    with pytest.raises(TypeError):
        len(torch_slt.mask_parameters(model))


# ------------------------------------------------------------------ saving and loading
def test_save_and_load_take_the_object_first_and_map_location(tmp_path):
    from torch_slt.experiment.zoo import ModelSpec, build_model

    spec = ModelSpec("lenet300", (1, 8, 8), 10, width=0.1, seed=1)
    model = torch_slt.finalize(torch_slt.apply(build_model(spec), "magnitude", sparsity=0.8))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        new = torch_slt.save_ticket(model, tmp_path / "new.slt.safetensors", spec)
        torch_slt.save_file(model, tmp_path / "m.safetensors")
        state = torch_slt.load_file(tmp_path / "m.safetensors", map_location="cpu")
        loaded, _, _ = torch_slt.load_ticket(new, map_location="cpu")
    with pytest.warns(FutureWarning, match=r"save_ticket\(model, path, spec\)"):
        old = torch_slt.save_ticket(tmp_path / "old.slt.safetensors", model, spec)
    from safetensors.torch import load_file as read

    from torch_slt.experiment.ticket import ticket_info

    assert ticket_info(old) == ticket_info(new)
    assert {k: v.tolist() for k, v in read(old).items()} == {k: v.tolist() for k, v in read(new).items()}
    with pytest.warns(FutureWarning, match="map_location"):
        old_state = torch_slt.load_file(tmp_path / "m.safetensors", device="cpu")
    assert list(old_state) == list(state) == list(model.state_dict())
    assert all(torch.equal(old_state[k], state[k]) for k in state)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))


def test_load_file_refuses_a_map_location_it_cannot_use(tmp_path):
    torch_slt.save_file(mlp(), tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="map_location must be a device name"):
        torch_slt.load_file(tmp_path / "m.safetensors", map_location={"cuda:0": "cpu"})


# ------------------------------------------------------------------ names that say what they return
def test_training_accuracy_is_named_for_what_it_returns():
    from torch.utils.data import TensorDataset

    from torch_slt.experiment import train

    model = mlp()
    data = TensorDataset(torch.randn(20, 4), torch.randint(0, 3, (20,)))
    expected = float((model(data.tensors[0]).argmax(1) == data.tensors[1]).float().mean())
    assert train.accuracy(model, data) == pytest.approx(expected)
    with pytest.warns(FutureWarning, match=r"renamed accuracy\(\)"):
        assert train.evaluate(model, data) == pytest.approx(expected)
    assert "evaluate" not in train.__all__ and "accuracy" in train.__all__


# ------------------------------------------------------------------ attributes in a fresh interpreter
def _readme_names() -> set[str]:
    return set(re.findall(r"torch_slt\.([A-Za-z_]\w*)", (ROOT / "README.md").read_text()))


def test_every_public_name_resolves_as_an_attribute_in_a_fresh_interpreter():
    names = sorted(_readme_names() | set(torch_slt.SUBPACKAGES) | set(torch_slt.__all__))
    assert {"lottery", "prune", "integrations", "init", "compact", "evaluate"} <= set(names)
    # One interpreter; a name an earlier import set as a side effect is removed first, so each is
    # resolved by torch_slt itself (its lazy list), as in an interpreter where it comes first.
    script = f"""
import json, torch_slt
baseline, failed = set(vars(torch_slt)), []
for name in {names!r}:
    if name in vars(torch_slt) and name not in baseline:
        delattr(torch_slt, name)
    try:
        getattr(torch_slt, name)
    except AttributeError as err:
        failed.append(f"{{name}}: {{err}}")
print(json.dumps(failed))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_lottery_alone_in_a_fresh_interpreter():
    script = "import torch_slt; print(torch_slt.lottery.imp.__module__)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch_slt.lottery.imp"


# ------------------------------------------------------------------ functional twins
@pytest.mark.parametrize("method", torch_slt.list_methods())
def test_twins_are_made_once_with_their_methods_signature_and_docstring(method):
    twin, cls = getattr(prune, method), torch_slt.get_method(method)
    assert twin is getattr(prune, method) and twin.__name__ == method and twin.__module__ == "torch_slt.prune"
    assert inspect.isfunction(twin) and method in dir(prune)
    signature = inspect.signature(twin)
    public = [n for n in inspect.signature(cls.__init__).parameters if n != "self" and not n.startswith("_")]
    assert list(signature.parameters) == ["module", "name", "importance_scores", *public]
    init = inspect.signature(cls.__init__).parameters
    assert all(signature.parameters[n].default == init[n].default for n in public)
    assert inspect.cleandoc(cls.__doc__) in twin.__doc__ and "freezing nothing" in twin.__doc__


def test_twins_freeze_nothing_where_apply_freezes_the_rest():
    lin = prune.stg(nn.Linear(4, 3), "weight", lam=0.1)
    assert lin.bias.requires_grad and lin.weight_orig.requires_grad
    model = torch_slt.apply(nn.Sequential(nn.Linear(4, 3)), "stg", lam=0.1)
    assert not model[0].bias.requires_grad and not model[0].weight_orig.requires_grad


@pytest.fixture
def scratch_registry():
    """Registrations made by a test are removed afterwards (the registry is global)."""
    methods, aliases = dict(registry._METHODS), dict(registry._ALIASES)
    yield
    for name in set(registry._METHODS) - set(methods):
        vars(prune).pop(name, None)
    registry._METHODS.clear(), registry._METHODS.update(methods)
    registry._ALIASES.clear(), registry._ALIASES.update(aliases)


def test_a_method_registered_later_gets_its_twin_once(scratch_registry):
    from torch_slt.methods.magnitude import Magnitude

    @torch_slt.register_method("later_magnitude")
    class LaterMagnitude(Magnitude):
        """Magnitude under another name."""

    twin = prune.later_magnitude
    assert twin is prune.later_magnitude and "Magnitude under another name." in twin.__doc__
    lin = twin(nn.Linear(4, 3), "weight", amount=0.5)
    assert int(lin.weight_mask.sum()) == 6


# ------------------------------------------------------------------ registry
def test_list_methods_filters_by_pattern_and_kind():
    assert torch_slt.list_methods("s*") == ["snip", "stg", "supermask", "synflow"]
    assert torch_slt.list_methods(["*concrete", "edge*"]) == ["edgepopup", "hardconcrete"]
    assert torch_slt.list_methods("*gate*") == []
    assert torch_slt.list_methods(kind="learned") == ["edgepopup", "hardconcrete", "stg", "supermask"]
    assert torch_slt.list_methods(kind="fixed") == ["grasp", "magnitude", "random", "snip", "synflow"]
    assert torch_slt.list_methods(kind="weak") == ["cs"]
    assert torch_slt.list_methods("s*", kind="fixed") == ["snip", "synflow"]
    assert torch_slt.list_methods() == sorted(registry._METHODS)
    with pytest.raises(ValueError, match="kind='strong' is not one of 'learned', 'fixed', 'weak'"):
        torch_slt.list_methods(kind="strong")
    with pytest.raises(TypeError, match="filter must be a pattern"):
        torch_slt.list_methods(3)


def test_an_alias_keeps_the_class_name_and_a_deprecated_one_warns(scratch_registry):
    stg = torch_slt.get_method("stg")
    torch_slt.register_method("gaussian_gate")(stg)
    torch_slt.register_method("old_stg", deprecated=True)(stg)
    assert stg.name == "stg" and "gaussian_gate" not in torch_slt.list_methods()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch_slt.get_method("gaussian_gate") is stg
    with pytest.warns(FutureWarning, match="'old_stg' is deprecated and renamed 'stg'"):
        model = torch_slt.apply(mlp(), "old_stg", lam=0.1)
    assert [h.name for _, _, h in torch_slt.gated_tensors(model)] == ["stg", "stg"]
    with pytest.raises(ValueError, match="already registered by"):
        torch_slt.register_method("gaussian_gate")(torch_slt.get_method("magnitude"))


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("method, kwargs, error", [
    ("stg", {"lam": "0.1"}, TypeError), ("stg", {"lam": -1.0}, ValueError),
    ("stg", {"lam": True}, TypeError), ("stg", {"threshold": "0.5"}, TypeError),
    ("stg", {"threshold": 1.5}, ValueError),
    ("stg", {"sparsity": 0.5, "total_steps": 2.5}, TypeError),
    ("stg", {"sparsity": 0.5, "total_steps": 0}, ValueError),
    ("stg", {"sparsity": 0.5, "ramp": "x"}, TypeError),
    ("stg", {"sparsity": 0.5, "ramp": 0.0}, ValueError),
    ("hardconcrete", {"droprate_init": None}, TypeError),
    ("hardconcrete", {"droprate_init": 1.0}, ValueError),
    ("edgepopup", {"sparsity": 0.5, "scope": 3}, TypeError),
    ("edgepopup", {"sparsity": 0.5, "scope": "model"}, ValueError),
    ("magnitude", {"sparsity": "0.5"}, TypeError), ("magnitude", {"sparsity": 1.5}, ValueError),
    ("supermask", {"eval_mode": "soft"}, ValueError), ("stg", {"lamda": 0.1}, TypeError),
])
def test_wrong_types_raise_type_error_and_bad_values_value_error(method, kwargs, error):
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error) as info:
        torch_slt.apply(model, method, **kwargs)
    assert type(info.value) is error or issubclass(type(info.value), SLTError)
    assert not torch_slt.is_gated(model) and list(model.state_dict()) == list(before)
    assert all(p.requires_grad for p in model.parameters())


def test_numpy_scalars_are_numbers():
    model = torch_slt.apply(mlp(), "stg", sparsity=np.float32(0.5), lam=np.float64(0.1),
                            total_steps=np.int64(10), threshold=np.float32(0.5))
    hook = next(torch_slt.gated_tensors(model))[2]
    assert (hook.sparsity, hook.total_steps, type(hook.total_steps)) == (0.5, 10, int)
    mask = torch_slt.apply(mlp(), "magnitude", amount=np.float32(0.5), scope="layer")[0].weight_mask
    assert int(mask.sum()) == 16


def _all_error_classes() -> set[type]:
    import torch_slt.analysis  # noqa: F401  (each defines error classes of its own)
    import torch_slt.evaluation  # noqa: F401
    import torch_slt.lottery  # noqa: F401
    import torch_slt.structured  # noqa: F401

    found, todo = set(), [SLTError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("torch_slt"):
            found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_library_error_is_importable_from_torch_slt_and_listed_in_the_api_doc():
    api_doc = (ROOT / "docs" / "api.md").read_text()
    classes = _all_error_classes()
    assert {c.__name__ for c in classes} == set(torch_slt.ERRORS)
    for cls in classes:
        assert getattr(torch_slt, cls.__name__) is cls
        assert f"`{cls.__name__}`" in api_doc, cls.__name__
