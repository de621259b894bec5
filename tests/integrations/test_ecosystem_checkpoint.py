"""torch_slt.load_state_dict / save_file / load_file: gated checkpoints into fresh, ungated models."""

from __future__ import annotations

import pickle

import pytest
import torch

import torch_slt
from cases import METHOD_CASES
from models import batch, build, logits

METHODS = torch_slt.list_methods()


def train(model, opt, steps):
    x, y = batch()
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(logits(model(x)), y) + torch_slt.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def eval_out(model):
    model.eval()
    with torch.no_grad():
        return logits(model(batch(seed=4)[0]))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_checkpoint_loads_into_fresh_ungated_model(method, fmt, tmp_path):
    model = torch_slt.apply(build("mlp"), method, **METHOD_CASES[method](batch()))
    if trainable(model):
        train(model, torch.optim.Adam(trainable(model), lr=0.05), 2)
    expected = eval_out(model)
    path = tmp_path / f"ckpt.{fmt}"
    torch_slt.save_file(model, path)

    fresh = build("mlp", seed=3)                       # different weights, no gates
    result = torch_slt.load_state_dict(fresh, torch_slt.load_file(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert [n for n, _, _ in torch_slt.gated_tensors(fresh)] == [n for n, _, _ in
                                                                 torch_slt.gated_tensors(model)]
    for (_, a, ha), (_, b, hb) in zip(torch_slt.gated_tensors(model), torch_slt.gated_tensors(fresh)):
        assert type(ha) is type(hb)
        assert torch_slt.core.metadata.method_config(ha) == torch_slt.core.metadata.method_config(hb)
    sd_model, sd_fresh = model.state_dict(), fresh.state_dict()
    assert list(sd_model) == list(sd_fresh)
    assert all(torch.equal(sd_model[k], sd_fresh[k]) for k in sd_model)
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in fresh.parameters()]
    torch.testing.assert_close(eval_out(fresh), expected, rtol=0, atol=0)
    pickle.dumps(fresh)                                # the restored hooks stay picklable


def test_hyperparameters_come_back_from_the_metadata():
    model = torch_slt.apply(build("mlp"), "stg", lam=0.3, sigma=0.4, threshold=0.6)
    state = model.state_dict()
    assert state._metadata["1"]["torch_slt"]["weight"]["method"] == "stg"
    fresh = build("mlp")
    torch_slt.load_state_dict(fresh, state)
    hook = next(torch_slt.gated_tensors(fresh))[2]
    assert (hook.lam, hook.sigma, hook.threshold) == (0.3, 0.4, 0.6)


def test_missing_metadata_needs_method_and_says_so():
    model = torch_slt.apply(build("mlp"), "stg", lam=0.3)
    plain = dict(model.state_dict())                   # a plain dict: no _metadata
    fresh = build("mlp")
    with pytest.raises(ValueError, match=r"method='stg'"):
        torch_slt.load_state_dict(fresh, plain)
    assert not torch_slt.is_gated(fresh)
    torch_slt.load_state_dict(fresh, plain, method="stg", lam=0.3)
    assert next(torch_slt.gated_tensors(fresh))[2].lam == 0.3


def test_ungated_checkpoint_and_already_gated_model():
    dense = build("mlp")
    fresh = build("mlp", seed=2)
    torch_slt.load_state_dict(fresh, dense.state_dict())          # nothing to gate: a plain load
    assert not torch_slt.is_gated(fresh)
    with pytest.raises(torch_slt.NotGatedError, match="no gated tensor"):
        torch_slt.load_state_dict(fresh, dense.state_dict(), method="stg")
    gated = torch_slt.apply(build("mlp"), "stg")
    twin = torch_slt.apply(build("mlp", seed=5), "stg")
    torch_slt.load_state_dict(twin, gated.state_dict())
    assert len(list(torch_slt.gated_tensors(twin))) == 2


@pytest.mark.parametrize("method", [m for m in METHODS if torch_slt.get_method(m).learned])
def test_resuming_from_a_file_equals_not_stopping(method, tmp_path):
    kwargs = METHOD_CASES[method](batch())
    straight = torch_slt.apply(build("mlp"), method, **kwargs)
    opt = torch.optim.Adam(torch_slt.mask_parameters(straight), lr=0.05)
    torch.manual_seed(11)
    train(straight, opt, 4)

    first = torch_slt.apply(build("mlp"), method, **kwargs)
    opt = torch.optim.Adam(torch_slt.mask_parameters(first), lr=0.05)
    torch.manual_seed(11)
    train(first, opt, 2)
    torch.save({"model": first.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state()},
               tmp_path / "ckpt.pt")
    del first, opt

    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed = build("mlp", seed=9)
    torch_slt.load_state_dict(resumed, saved["model"])
    opt = torch.optim.Adam(torch_slt.mask_parameters(resumed), lr=0.05)
    opt.load_state_dict(saved["opt"])
    torch.set_rng_state(saved["rng"])
    train(resumed, opt, 2)
    a, b = straight.state_dict(), resumed.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_load_file_never_unpickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch_slt.load_file(path)
