"""Weights used outside their module's forward: MHA, TransformerEncoder, parent reads, tied weights, Conv1D.

Each case is either gated correctly (the gate changes the output and receives a gradient from the task
loss) or refused at apply with the model left unchanged; never a silently stale weight.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import torch_slt


def masked_copy(model: nn.Module) -> nn.Module:
    """A plain (ungated) copy whose gated weights are replaced by ``orig * hard mask``."""
    return torch_slt.finalize(copy.deepcopy(model))


def unchanged(model: nn.Module, before: dict) -> bool:
    after = model.state_dict()
    return list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


def task_grads_reach(model: nn.Module, loss: torch.Tensor) -> dict[str, float]:
    """|grad| summed per gate, from the task loss alone (no penalty)."""
    for p in torch_slt.mask_parameters(model):
        p.grad = None
    loss.backward()
    return {n: p.grad.abs().sum().item() if p.grad is not None else 0.0
            for n, p in torch_slt.named_mask_parameters(model)}


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_out_proj_is_gated_not_stale(batch_first):
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    torch_slt.apply(mha, "stg", lam=0.1)
    assert [(n, h._tensor_name) for n, _, h in torch_slt.gated_tensors(mha)] == [
        ("", "in_proj_weight"), ("out_proj", "weight")]
    x = torch.randn(3, 5, 8)
    mha.train()
    grads = task_grads_reach(mha, mha(x, x, x)[0].pow(2).sum())
    assert grads["out_proj.weight_mu"] > 0, "the out_proj gate got no gradient from the output"

    # Prune half of out_proj; eval output (incl. the no-grad fast path) must follow the new mask.
    with torch.no_grad():
        mha.out_proj.weight_mu[:4] = -1.0
    mha.eval()
    reference = masked_copy(mha).eval()
    assert torch.count_nonzero(reference.out_proj.weight[:4]) == 0
    with torch.no_grad():
        torch.testing.assert_close(mha(x, x, x)[0], reference(x, x, x)[0])
    torch.testing.assert_close(mha(x, x, x)[0], reference(x, x, x)[0])   # with autograd (slow path)

    clone = copy.deepcopy(mha)            # the refresh hooks must point at the clone's own modules
    with torch.no_grad():
        clone.out_proj.weight_mu.fill_(-1.0)
        assert torch.count_nonzero(clone(x, x, x)[0]) == 0 and torch.count_nonzero(mha(x, x, x)[0]) > 0


def test_transformer_encoder_fast_path_uses_current_masks():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    torch_slt.apply(enc, "stg", lam=0.1)
    names = [n for n, _, _ in torch_slt.gated_tensors(enc)]
    assert names == [f"layers.{i}.{m}" for i in range(2)
                     for m in ("self_attn", "self_attn.out_proj", "linear1", "linear2")]
    x = torch.randn(2, 4, 8)
    opt = torch.optim.Adam(torch_slt.mask_parameters(enc), lr=0.2)
    enc.train()
    for _ in range(3):   # leaves relaxed (sampled) weights behind in every module's `weight` attribute
        grads = task_grads_reach(enc, enc(x).pow(2).mean())
        opt.step()
    assert all(g > 0 for g in grads.values()), grads
    enc.eval()
    reference = masked_copy(enc).eval()
    with torch.no_grad():                     # eval + no_grad: TransformerEncoderLayer's fast path
        torch.testing.assert_close(enc(x), reference(x))
        hard = enc(x)
    torch_slt.finalize(enc)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), hard)


class ReadsChildWeight(nn.Module):
    """A parent that uses its child's weight without calling the child."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(F.relu(F.linear(x, self.proj.weight, self.proj.bias)))


@pytest.mark.parametrize("method,kwargs", [("stg", {"lam": 0.1}), ("magnitude", {"sparsity": 0.5})])
def test_weight_read_by_parent_follows_the_gate(method, kwargs):
    model = ReadsChildWeight()
    torch_slt.apply(model, method, **kwargs)
    x = torch.randn(5, 6)
    if torch_slt.get_method(method).learned:
        model.train()
        grads = task_grads_reach(model, model(x).pow(2).sum())
        assert grads["proj.weight_mu"] > 0
        with torch.no_grad():
            model.proj.weight_mu[:2] = -1.0
    model.eval()
    reference = masked_copy(model).eval()
    torch.testing.assert_close(model(x), reference(x))
    torch_slt.finalize(model)
    assert not model._forward_pre_hooks and not model._forward_hooks, "reader hooks left after finalize"
    torch.testing.assert_close(model(x), reference(x))


def test_failed_apply_removes_reader_hooks():
    model = ReadsChildWeight()
    with pytest.raises(ValueError):
        torch_slt.apply(model, "stg", lam=0.1, mu_init=float("nan"))
    with pytest.raises(TypeError):
        torch_slt.apply(model, "stg", lam=0.1, no_such=1)
    assert not prune.is_pruned(model) and not model._forward_pre_hooks


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.body = nn.Linear(6, 6)
        self.out = nn.Linear(6, 10, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids):
        return self.out(torch.tanh(self.body(self.embed(ids))))


def test_tied_weights_are_refused_with_the_fix():
    model = TiedLM()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(torch_slt.UnsupportedModelError, match=r"'out.weight' is tied to 'embed.weight'.*"
                       r"exclude=\['out'\]"):
        torch_slt.apply(model, "stg", lam=0.1)
    assert not prune.is_pruned(model) and unchanged(model, before)
    assert all(p.requires_grad for p in model.parameters())
    torch_slt.apply(model, "stg", lam=0.1, exclude=["out"])
    assert [n for n, _, _ in torch_slt.gated_tensors(model)] == ["body"]


def test_two_linears_sharing_a_parameter_are_refused_but_a_reused_module_is_not():
    shared = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    shared[1].weight = shared[0].weight
    with pytest.raises(torch_slt.UnsupportedModelError, match="'0.weight' is tied to '1.weight'"):
        torch_slt.apply(shared, "magnitude", sparsity=0.5)
    layer = nn.Linear(4, 4)
    reused = nn.Sequential(layer, nn.ReLU(), layer)         # one module called twice: fine
    torch_slt.apply(reused, "magnitude", sparsity=0.5)
    assert [n for n, _, _ in torch_slt.gated_tensors(reused)] == ["0"]


def tiny_gpt2(head: bool):
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=8,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return (GPT2LMHeadModel if head else GPT2Model)(config)


def test_gpt2_tied_lm_head_is_refused():
    model = tiny_gpt2(head=True)
    with pytest.raises(torch_slt.UnsupportedModelError, match=r"'lm_head.weight' is tied to "
                       r"'transformer.wte.weight'"):
        torch_slt.apply(model, "stg")
    assert not prune.is_pruned(model)
    torch_slt.apply(model, "stg", exclude=["lm_head"])
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize("method,kwargs", [("stg", {"lam": 0.1}), ("magnitude", {"sparsity": 0.5})])
def test_gpt2_conv1d_gated_and_finalized(method, kwargs):
    torch.manual_seed(0)
    model = tiny_gpt2(head=False)
    fresh_weights = {k: v.clone() for k, v in model.state_dict().items()}
    torch_slt.apply(model, method, **kwargs)
    gated = [n for n, _, _ in torch_slt.gated_tensors(model)]
    assert gated == ["h.0.attn.c_attn", "h.0.attn.c_proj", "h.0.mlp.c_fc", "h.0.mlp.c_proj"]
    conv = model.h[0].attn.c_attn
    assert conv.weight_mask.shape == conv.weight_orig.shape == (16, 48)   # Conv1D: (in, out)
    ids = torch.randint(0, 32, (2, 8))
    if torch_slt.get_method(method).learned:
        opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=0.2)
        model.train()
        for _ in range(2):
            grads = task_grads_reach(model, model(ids).last_hidden_state.pow(2).mean())
            opt.step()
        assert all(g > 0 for g in grads.values()), grads
        with torch.no_grad():
            conv.weight_mu[:, :8] = -1.0          # prune 8 output columns of the transposed weight
    model.eval()
    with torch.no_grad():
        before = model(ids).last_hidden_state
    torch_slt.finalize(model)
    fresh = tiny_gpt2(head=False).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).last_hidden_state, before, rtol=0, atol=0)
    kept = fresh.h[0].attn.c_attn.weight != 0
    assert torch.equal(fresh.h[0].attn.c_attn.weight[kept], fresh_weights["h.0.attn.c_attn.weight"][kept])
