"""granularity=: one gate per neuron / channel / head for stg, hardconcrete and magnitude."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.granularity import GranularityError


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))


@pytest.mark.parametrize("method,field", [("stg", "mu"), ("hardconcrete", "log_alpha")])
def test_one_gate_per_neuron_gets_gradients_and_masks_whole_rows(method, field):
    torch.manual_seed(0)
    net = torch_slt.apply(mlp(), method, granularity="neuron", lam=0.1)
    gates = dict(torch_slt.named_mask_parameters(net))
    assert {n: tuple(g.shape) for n, g in gates.items()} == {f"0.weight_{field}": (6, 1),
                                                           f"2.weight_{field}": (2, 1)}
    loss = net(torch.randn(8, 4)).pow(2).sum() + torch_slt.penalty(net)
    loss.backward()
    assert all(g.grad is not None and g.grad.shape == g.shape and g.grad.abs().sum() > 0
               for g in gates.values())
    with torch.no_grad():
        gates[f"0.weight_{field}"][[0, 3]] = -10.0
    net.eval()
    net(torch.randn(1, 4))
    mask = net[0].weight_mask
    assert mask.shape == (6, 4) and mask.all(1).tolist() == [False, True, True, False, True, True]
    assert (mask.any(1) == mask.all(1)).all()          # whole rows
    torch_slt.finalize(net)
    assert torch.count_nonzero(net[0].weight[[0, 3]]) == 0
    mlp().load_state_dict(net.state_dict(), strict=True)


def test_penalty_counts_weights_not_gates():
    # Layer 0 has 6 neurons x 4 inputs, layer 2 has 2 x 6: close all of layer 0 (24 of 36 weights).
    net = torch_slt.apply(mlp(), "stg", granularity="neuron", lam=1.0, sigma=0.5)
    with torch.no_grad():
        net[0].weight_mu.fill_(-100.0)
        net[2].weight_mu.fill_(100.0)
    torch.testing.assert_close(torch_slt.penalty(net), torch.tensor(12 / 36))
    net.train()
    net(torch.randn(2, 4))                            # the fused train-mode term, scaled the same way
    torch.testing.assert_close(torch_slt.penalty(net).detach(), torch.tensor(12 / 36))


def test_conv_channels_and_sparsity_target_count_weights():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    torch_slt.apply(net, "stg", granularity="channel", sparsity=0.5)
    assert tuple(net[0].weight_mu.shape) == (4, 1, 1, 1)
    net.train()
    net(torch.randn(1, 3, 5, 5)).sum().backward()
    torch_slt.penalty(net)                             # one lambda step on grouped gates runs
    assert net[0].weight_mask.shape == (4, 3, 3, 3)


def test_magnitude_ranks_groups_by_l1_norm_and_keeps_whole_groups():
    layer = nn.Linear(3, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 0.0, 0.0],       # L1 3, max 3
                                         [1.0, 1.0, 1.5],       # L1 3.5, max 1.5
                                         [0.1, 0.1, 0.1],
                                         [-2.0, -2.0, 0.0]]))   # L1 4
    torch_slt.apply(layer, "magnitude", sparsity=0.5, granularity="neuron")
    assert layer.weight_mask.all(1).tolist() == [False, True, False, True]
    assert (layer.weight_mask.any(1) == layer.weight_mask.all(1)).all()


def test_heads_for_multihead_attention_share_one_gate_across_q_k_v():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    torch_slt.apply(mha, "stg", granularity="head")
    assert tuple(mha.in_proj_weight_mu.shape) == (1, 2, 1, 1)
    assert tuple(mha.out_proj.weight_mu.shape) == (8, 1)     # not a q/k/v projection: neuron gates
    with torch.no_grad():
        mha.in_proj_weight_mu[0, 1] = -5.0
    mha.eval()
    x = torch.randn(1, 3, 8)
    mha(x, x, x)
    rows = mha.in_proj_weight_mask.all(1).view(3, 2, 4)     # [q|k|v][head][head_dim]
    assert rows[:, 0].all() and not rows[:, 1].any()


def test_heads_for_timm_qkv():
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8,
                            embed_dim=8, depth=1, num_heads=2, num_classes=3)
    torch_slt.apply(vit, "magnitude", sparsity=0.5, granularity="head", targets="qkv")
    rows = vit.blocks[0].attn.qkv.weight_mask.all(1).view(3, 2, 4)
    assert rows.all(-1).all(0).tolist() in ([True, False], [False, True])   # one head of two, in q, k and v


def test_grouped_gates_reload_from_a_checkpoint():
    torch.manual_seed(0)
    src = torch_slt.apply(mlp(), "stg", granularity="neuron")
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst = mlp()
    torch_slt.load_state_dict(dst, torch.load(buf, weights_only=True))
    assert tuple(dst[0].weight_mu.shape) == (6, 1)


def test_unknown_granularity_is_a_clear_error_and_leaves_the_model_alone():
    net = mlp()
    with pytest.raises(GranularityError, match="granularity='row'.*'neuron'"):
        torch_slt.apply(net, "stg", granularity="row")
    assert not torch_slt.is_gated(net)
    with pytest.raises(TypeError, match="granularity"):      # methods without groups say so
        torch_slt.apply(net, "snip", sparsity=0.5, granularity="neuron", data=(torch.randn(2, 4),
                                                                              torch.tensor([0, 1])))


def test_heads_for_hugging_face_vit_and_swin():
    transformers = pytest.importorskip("transformers")
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=16, patch_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, num_labels=3))
    swin = transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=16, patch_size=4, embed_dim=8, depths=[1], num_heads=[2], window_size=2, num_labels=3))
    for model in (vit, swin):
        torch_slt.apply(model, "hardconcrete", granularity="head")
        shapes = {n.rsplit(".", 2)[-2]: tuple(p.shape) for n, p in torch_slt.named_mask_parameters(model)}
        projections = [k for k in shapes if k in ("q_proj", "k_proj", "v_proj", "query", "key", "value")]
        assert len(projections) == 3 and all(shapes[k] == (1, 2, 1, 1) for k in projections)
        assert all(len(s) == 2 and s[1] == 1 for k, s in shapes.items() if k in ("fc1", "dense", "o_proj"))


def test_functional_twins_take_granularity():
    torch.manual_seed(0)
    layer = nn.Linear(4, 6)
    torch_slt.prune.magnitude(layer, "weight", sparsity=0.5, granularity="neuron")
    rows = layer.weight_mask.all(1)
    assert (layer.weight_mask.any(1) == rows).all() and rows.sum() == 3
    layer = nn.Linear(4, 6)
    torch_slt.prune.stg(layer, "weight", granularity="neuron")
    assert tuple(layer.weight_mu.shape) == (6, 1)
