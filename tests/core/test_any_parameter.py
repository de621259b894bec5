"""Gates on any parameter: MHA's in_proj_weight, RNN weights, named parameters, 3-argument callables."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torch_slt


class AttnRnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.rnn = nn.LSTM(8, 6, batch_first=True)
        self.emb = nn.Embedding(10, 8)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(x, x, x)
        h, _ = self.rnn(a)
        return self.fc(h[:, -1])


def gated(model: nn.Module) -> list[str]:
    return [f"{n}.{h._tensor_name}" for n, _, h in torch_slt.gated_tensors(model)]


def test_defaults_gate_in_proj_and_recurrent_weights_not_embeddings():
    model = torch_slt.apply(AttnRnn(), "stg")
    assert gated(model) == ["attn.in_proj_weight", "attn.out_proj.weight", "rnn.weight_ih_l0",
                            "rnn.weight_hh_l0", "fc.weight"]


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_gates_get_gradients_and_finalize_to_a_strict_state_dict(cls):
    torch.manual_seed(0)
    rnn = cls(4, 3, num_layers=2, batch_first=True)
    torch_slt.apply(rnn, "stg", lam=0.1)
    x = torch.randn(2, 5, 4)
    out, _ = rnn(x)
    (out.pow(2).sum() + torch_slt.penalty(rnn)).backward()
    grads = {n: p.grad for n, p in torch_slt.named_mask_parameters(rnn)}
    assert sorted(grads) == sorted(f"weight_{k}_l{i}_mu" for k in ("ih", "hh") for i in range(2))
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    with torch.no_grad():
        rnn.weight_hh_l1_mu[:2] = -1.0               # close two rows of one recurrent matrix
    copy.deepcopy(rnn)                                # no graph left in the RNN's flat weight list
    rnn.eval()
    with torch.no_grad():
        before = rnn(x)[0]
    torch_slt.finalize(rnn)
    assert isinstance(rnn.weight_hh_l1, nn.Parameter)
    assert torch.count_nonzero(rnn.weight_hh_l1[:2]) == 0
    assert all(w is getattr(rnn, n) for w, n in zip(rnn._flat_weights, rnn._flat_weights_names))
    with torch.no_grad():
        torch.testing.assert_close(rnn(x)[0], before)
    fresh = cls(4, 3, num_layers=2, batch_first=True)
    fresh.load_state_dict(rnn.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)[0], before)


def test_mha_in_proj_gate_changes_output_gets_gradient_and_finalizes():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    torch_slt.apply(mha, "stg", lam=0.1, targets="in_proj_weight")
    assert gated(mha) == [".in_proj_weight"]
    x = torch.randn(2, 5, 8)
    mha(x, x, x)[0].pow(2).sum().backward()
    assert mha.in_proj_weight_mu.grad.abs().sum() > 0
    mha.eval()
    with torch.no_grad():
        dense = mha(x, x, x)[0]
        mha.in_proj_weight_mu[16:] = -1.0              # close every value projection row
        assert torch.count_nonzero(mha(x, x, x)[0] - mha.out_proj.bias) == 0
    torch_slt.finalize(mha)
    assert sorted(mha.state_dict()) == sorted(nn.MultiheadAttention(8, 2).state_dict())
    assert not torch.equal(dense, mha(x, x, x)[0])


def test_parameter_names_globs_and_regexes_select_tensors():
    model = AttnRnn()
    torch_slt.apply(model, "magnitude", sparsity=0.5,
                    targets=["*.in_proj_weight", "rnn.weight_ih_l0", "emb"])
    assert gated(model) == ["attn.in_proj_weight", "rnn.weight_ih_l0", "emb.weight"]
    torch_slt.finalize(model)
    AttnRnn().load_state_dict(model.state_dict(), strict=True)


def test_exclude_a_parameter_keeps_the_rest_of_the_module():
    model = torch_slt.apply(AttnRnn(), "stg", exclude=["rnn.weight_hh_l0", "attn"])
    assert gated(model) == ["attn.out_proj.weight", "rnn.weight_ih_l0", "fc.weight"]


def test_three_argument_callable_sees_parameter_names():
    seen = []

    def pick(module_name, param_name, module):
        seen.append((module_name, param_name))
        return param_name.startswith("weight_hh")

    model = torch_slt.apply(AttnRnn(), "random", sparsity=0.5, targets=pick)
    assert gated(model) == ["rnn.weight_hh_l0"]
    assert ("emb", "weight") in seen and ("fc", "bias") in seen


def test_unmatched_parameter_name_is_the_same_error_and_leaves_the_model_alone():
    model = AttnRnn()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(torch_slt.NoTargetsError, match=r"targets='attn.in_proj_weigth'.*Candidate modules"):
        torch_slt.apply(model, "stg", targets="attn.in_proj_weigth")
    with pytest.raises(ValueError):     # NoTargetsError is also a ValueError
        torch_slt.apply(model, "stg", targets=["rnn.weight_xx"])
    assert not torch_slt.is_gated(model) and model.state_dict().keys() == before.keys()


def test_gated_checkpoint_of_any_parameter_reloads_into_a_fresh_model():
    torch.manual_seed(0)
    src = torch_slt.apply(AttnRnn(), "magnitude", sparsity=0.5, targets=["*.in_proj_weight", "rnn"])
    dst = AttnRnn()
    torch_slt.load_state_dict(dst, src.state_dict())
    assert gated(dst) == gated(src)
    assert torch.equal(dst.rnn.weight_hh_l0_mask, src.rnn.weight_hh_l0_mask)


def test_torchvision_vit_gets_every_projection_gated():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vit = tv.models.VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2,
                                      hidden_dim=8, mlp_dim=16, num_classes=3)
    nn.init.normal_(vit.heads.head.weight)   # torchvision zero-initialises the head: no gradient at all
    torch_slt.apply(vit, "stg", lam=0.1)
    names = gated(vit)
    for i in range(2):
        block = f"encoder.layers.encoder_layer_{i}"
        for t in ("self_attention.in_proj_weight", "self_attention.out_proj.weight",
                  "mlp.0.weight", "mlp.3.weight"):
            assert f"{block}.{t}" in names
    assert "conv_proj.weight" in names and "heads.head.weight" in names
    x = torch.randn(2, 3, 16, 16)
    vit(x).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in torch_slt.mask_parameters(vit))
    vit.eval()
    with torch.no_grad():
        before = vit(x)
    torch_slt.finalize(vit)
    fresh = tv.models.VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2,
                                        hidden_dim=8, mlp_dim=16, num_classes=3)
    fresh.load_state_dict(vit.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), before)


class SeparateKV(nn.Module):
    """MHA with kdim/vdim != embed_dim (q/k/v_proj_weight instead of in_proj_weight) and a GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, kdim=6, vdim=6)
        self.rnn = nn.GRU(8, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(x, x[..., :6], x[..., :6])
        return self.fc(self.rnn(a)[0][:, -1])


_BATCH = (torch.randn(4, 5, 8), torch.tensor([0, 1, 2, 0]))
_METHOD_KWARGS = {"stg": {}, "hardconcrete": {}, "edgepopup": {"sparsity": 0.5}, "supermask": {},
                  "magnitude": {"sparsity": 0.5}, "random": {"sparsity": 0.5},
                  "snip": {"sparsity": 0.5, "data": _BATCH}, "grasp": {"sparsity": 0.5, "data": _BATCH},
                  "synflow": {"sparsity": 0.5, "input_shape": (5, 8), "scope": "layer"}}


@pytest.mark.parametrize("method", sorted(_METHOD_KWARGS))
def test_every_method_gates_non_weight_parameters(method):
    if method not in torch_slt.list_methods():
        pytest.skip(f"{method} not registered")
    torch.manual_seed(0)
    model = torch_slt.apply(SeparateKV(), method, **_METHOD_KWARGS[method])
    assert gated(model) == ["attn.q_proj_weight", "attn.k_proj_weight", "attn.v_proj_weight",
                            "attn.out_proj.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "fc.weight"]
    x = _BATCH[0]
    model.train()
    model(x).sum().backward()
    model.eval()
    with torch.no_grad():
        before = model(x)
    torch_slt.finalize(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    SeparateKV().load_state_dict(model.state_dict(), strict=True)
