"""compact(): physical removal of closed neurons/channels/heads; outputs equal the finalized model's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.structured.compaction import CompactError, recalibrate_batchnorm

pytest.importorskip("torch_pruning")


def test_mlp_neurons_are_removed_and_relu_of_bias_is_folded():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    torch_slt.apply(net, "stg", granularity="neuron", targets="0")
    with torch.no_grad():
        net[0].weight_mu[[1, 4]] = -1.0              # close neurons 1 and 4
        net[0].bias[1] = 0.7                         # a closed neuron still outputs relu(0.7)
    torch_slt.finalize(net)
    x = torch.randn(16, 5)
    small = torch_slt.compact(net, x, return_report=False)
    report = small.compact_report
    assert small[0].out_features == 4 and small[2].in_features == 4
    assert net[0].out_features == 6                  # the input model is untouched
    torch.testing.assert_close(small(x), net(x))
    torch.testing.assert_close(small(torch.randn(3, 5) * 0), net(torch.zeros(3, 5)))
    assert report.removed == {"0": 2}
    assert report.params_after < report.params_before and report.macs_after < report.macs_before


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


class ResCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.b1, self.b2 = Block(6), Block(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = self.b2(self.b1(torch.relu(self.bn(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


def test_cnn_with_batchnorm_and_residuals_keeps_the_union_and_equal_outputs():
    torch.manual_seed(0)
    net = ResCNN()
    torch_slt.apply(net, "stg", granularity="channel", exclude="fc")
    with torch.no_grad():
        for block in (net.b1, net.b2):
            block.conv1.weight_mu[[0, 2, 3]] = -1.0   # inner channels: removable
        net.stem.weight_mu[[1, 5]] = -1.0             # residual stream: channel 5 closed everywhere,
        net.b1.conv2.weight_mu[[5]] = -1.0            # channel 1 only in the stem (mixed: kept)
        net.b2.conv2.weight_mu[[5]] = -1.0
    torch_slt.finalize(net)
    x = torch.randn(4, 3, 8, 8)
    recalibrate_batchnorm(net, [x])   # closed channels' running stats -> 0, so they output exactly 0
    net.eval()
    small = torch_slt.compact(net, x, return_report=False)
    report = small.compact_report
    assert (small.b1.conv1.out_channels, small.b2.conv1.out_channels) == (3, 3)
    assert small.stem.out_channels == 5 and small.bn.num_features == 5 and small.fc.in_features == 5
    assert any("union kept" in why for why in report.kept)
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x))
        y = torch.randn(2, 3, 8, 8)
        torch.testing.assert_close(small(y), net(y))


def test_nonzero_constant_into_a_padded_convolution_is_kept():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    torch_slt.apply(net, "magnitude", sparsity=0.0, granularity="channel", targets="0")
    torch_slt.finalize(net)
    with torch.no_grad():
        net[0].weight[1] = 0.0
        net[0].bias[1] = 0.5                          # relu(0.5) reaches the padded conv: not removable
        net[0].weight[2] = 0.0
        net[0].bias[2] = -0.5                         # relu(-0.5) = 0: removable
    x = torch.randn(2, 2, 6, 6)
    small = torch_slt.compact(net, x, return_report=False)
    report = small.compact_report
    assert small[0].out_channels == 3
    torch.testing.assert_close(small(x), net(x))
    assert report.kept


def test_hf_vit_heads_are_removed():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16,
                                 num_hidden_layers=1, num_attention_heads=4, intermediate_size=16,
                                 num_labels=3)
    vit = transformers.ViTForImageClassification(cfg).eval()
    torch_slt.apply(vit, "stg", granularity="head", targets=["v_proj", "q_proj"])
    attn = vit.vit.layers[0].attention
    assert tuple(attn.v_proj.weight_mu.shape) == (1, 4, 1, 1)
    with torch.no_grad():
        attn.v_proj.weight_mu[0, [1, 3]] = -1.0      # heads 1 and 3 output only their value bias
        attn.q_proj.weight_mu[0, [0]] = -1.0         # head 0 loses its query only: must stay
    torch_slt.finalize(vit)
    x = torch.randn(2, 3, 16, 16)
    small = torch_slt.compact(vit, x, return_report=False)
    report = small.compact_report
    s_attn = small.vit.layers[0].attention
    assert s_attn.q_proj.out_features == s_attn.k_proj.out_features == s_attn.v_proj.out_features == 8
    assert s_attn.o_proj.in_features == 8 and s_attn.num_attention_heads == 2
    with torch.no_grad():
        torch.testing.assert_close(small(x).logits, vit(x).logits)


def test_compact_refuses_a_gated_model():
    net = torch_slt.apply(nn.Sequential(nn.Linear(3, 3)), "stg", granularity="neuron")
    with pytest.raises(CompactError, match="finalize"):
        torch_slt.compact(net, torch.randn(1, 3))


def test_timm_vit_packed_qkv_loses_whole_heads():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8,
                            embed_dim=16, depth=1, num_heads=4, num_classes=3).eval()
    torch_slt.apply(vit, "stg", granularity="head", targets="qkv")
    with torch.no_grad():
        vit.blocks[0].attn.qkv.weight_mu[0, [0, 2]] = -1.0     # heads 0 and 2, in q, k and v at once
    torch_slt.finalize(vit)
    x = torch.randn(2, 3, 16, 16)
    small = torch_slt.compact(vit, x, return_report=False)
    report = small.compact_report
    attn = small.blocks[0].attn
    assert attn.qkv.out_features == 24 and attn.proj.in_features == 8 and attn.num_heads == 2
    with torch.no_grad():
        torch.testing.assert_close(small(x), vit(x))
