"""timm models (built from their registry, ``pretrained=False``): apply, train, finalize, strict reload."""

from __future__ import annotations

import pytest
import torch

import torch_slt

timm = pytest.importorskip("timm")

MODELS = {
    "test_vit": dict(img_size=16, patch_size=8),
    "test_resnet": {},
}


def create(name, seed=0):
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=3, **MODELS[name])


@pytest.mark.parametrize("name", list(MODELS))
def test_timm_model_apply_train_finalize_reload(name):
    model = torch_slt.apply(create(name), "stg", lam=0.5)
    gated = [n for n, _, _ in torch_slt.gated_tensors(model)]
    assert any("conv" in n or "qkv" in n for n in gated) and len(gated) >= 4
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.1)
    before = {n: p.detach().clone() for n, p in torch_slt.named_mask_parameters(model)}
    model.train()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(x), y) + torch_slt.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not torch.equal(p, before[n]) for n, p in torch_slt.named_mask_parameters(model))
    first = model.get_submodule(gated[0])
    with torch.no_grad():
        first.weight_mu.view(-1)[::2] = -1.0          # prune every other weight of the first layer
    model.eval()
    with torch.no_grad():
        expected = model(x)
    torch_slt.finalize(model)
    fresh = create(name, seed=1).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)
    assert torch.count_nonzero(fresh.get_submodule(gated[0]).weight.view(-1)[::2]) == 0
