"""Every registered method x every tiny model: the guarantees torch_slt makes for all methods."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch.nn.utils import prune

import torch_slt
from cases import METHOD_CASES, REQUESTED_SPARSITY
from models import MODELS, batch, build, logits
from torch_slt.core.selection import keep_count
from torch_slt.core.targets import is_default_target

CASES = [(m, k) for m in torch_slt.list_methods() for k in MODELS]


def gated(method: str, model_name: str, seed: int = 0):
    model = build(model_name, seed)
    kwargs = METHOD_CASES[method](batch())
    return torch_slt.apply(model, method, **kwargs)


def train_step(model, opt=None):
    x, y = batch()
    model.train()
    loss = torch.nn.functional.cross_entropy(logits(model(x)), y) + torch_slt.penalty(model)
    loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad()
    return loss


def test_every_registered_method_has_a_case():
    assert set(torch_slt.list_methods()) == set(METHOD_CASES)


@pytest.mark.parametrize("method,model_name", CASES)
def test_apply_gates_every_default_target(method, model_name):
    model = build(model_name)
    expected = [n for n, m in model.named_modules() if is_default_target(m)]
    out = torch_slt.apply(model, method, **METHOD_CASES[method](batch()))
    assert out is model and prune.is_pruned(model)
    gated_names = [n for n, _, _ in torch_slt.gated_tensors(model)]
    assert gated_names == expected
    for name in expected:
        module = model.get_submodule(name)
        assert isinstance(module.weight_orig, torch.nn.Parameter)
        assert module.weight_mask.dtype == torch.bool and module.weight_mask.shape == module.weight_orig.shape


@pytest.mark.parametrize("method,model_name", CASES)
def test_forward_backward_reaches_trainable_tensors(method, model_name):
    model = gated(method, model_name)
    loss = train_step(model)
    assert torch.isfinite(loss)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, "nothing left to train"
    for name, p in trainable:
        assert p.grad is not None, f"no gradient reached {name}"
    cls = torch_slt.get_method(method)
    if cls.learned:
        gates = dict(torch_slt.named_mask_parameters(model))
        if cls.trains_weights:  # a weak-ticket method (cs): the gates and every weight train
            assert gates and set(gates) < {n for n, _ in trainable}
        else:                   # a strong ticket: only the gates train
            assert gates and {n for n, _ in trainable} == set(gates)
        for name, p in gates.items():
            assert p.grad.abs().sum() > 0, f"zero gradient on gate {name}"


@pytest.mark.parametrize("method,model_name", CASES)
def test_fixed_masks_hit_requested_sparsity_exactly(method, model_name):
    if torch_slt.get_method(method).learned:
        pytest.skip("learned masks reach their sparsity by training (per-method tests)")
    model = gated(method, model_name)
    rep = torch_slt.report(model)
    assert rep.kept == keep_count(rep.total, REQUESTED_SPARSITY)


@pytest.mark.parametrize("method,model_name", CASES)
def test_finalize_keeps_eval_outputs_and_loads_strictly(method, model_name):
    model = gated(method, model_name)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        train_step(model, opt)
    model.eval()
    x, _ = batch(seed=5)
    with torch.no_grad():
        before = logits(model(x))
    report_before = torch_slt.report(model)
    torch_slt.finalize(model)
    assert not prune.is_pruned(model)
    fresh = build(model_name, seed=1).eval()
    assert list(model.state_dict()) == list(fresh.state_dict())
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(logits(model(x)), before, rtol=0, atol=0)
        torch.testing.assert_close(logits(fresh(x)), before, rtol=0, atol=0)
    assert torch_slt.report(model).to_dict() == report_before.to_dict()


@pytest.mark.parametrize("method,model_name", CASES)
def test_deepcopy_and_pickle_after_forward(method, model_name):
    model = gated(method, model_name)
    train_step(model)
    clone = copy.deepcopy(model)
    restored = pickle.loads(pickle.dumps(model))
    model.eval(), clone.eval(), restored.eval()
    x, _ = batch(seed=3)
    with torch.no_grad():
        expected = logits(model(x))
        torch.testing.assert_close(logits(clone(x)), expected, rtol=0, atol=0)
        torch.testing.assert_close(logits(restored(x)), expected, rtol=0, atol=0)


@pytest.mark.parametrize("method,model_name", CASES)
def test_state_dict_round_trip_resumes_identically(method, model_name):
    model = gated(method, model_name)
    params = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
    opt = torch.optim.Adam(params(model), lr=0.05)
    train_step(model, opt)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "rng": torch.get_rng_state()}, buf)
    train_step(model, opt)
    train_step(model, opt)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    twin = gated(method, model_name, seed=7)  # different weights: everything must come from the file
    twin.load_state_dict(saved["model"], strict=True)
    twin_opt = torch.optim.Adam(params(twin), lr=0.05)
    twin_opt.load_state_dict(saved["opt"])
    torch.set_rng_state(saved["rng"])
    train_step(twin, twin_opt)
    train_step(twin, twin_opt)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("method,model_name", CASES)
def test_bad_input_leaves_model_unchanged(method, model_name):
    model = build(model_name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    kwargs = METHOD_CASES[method](batch())
    with pytest.raises(TypeError, match="no_such_option"):
        torch_slt.apply(model, method, no_such_option=1, **kwargs)
    with pytest.raises(ValueError, match="matched no module"):
        torch_slt.apply(model, method, targets="does_not_exist", **kwargs)
    assert not prune.is_pruned(model)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
