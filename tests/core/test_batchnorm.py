"""recalibrate_batchnorm: BatchNorm statistics of the ticket's hard mask; the stale-statistics warning;
fit's recalibration."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import torch_slt
from torch_slt.core.batchnorm import stale_batchnorm


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def _trained(method: str = "stg", **kwargs) -> nn.Sequential:
    """A gated net after a few training forwards (the statistics then describe the relaxed masks)."""
    net = torch_slt.apply(_net(), method, **kwargs)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 1, 6, 6))
    return net


def _relevant_warnings(fn) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught if "BatchNorm" in str(w.message)]


def test_statistics_are_those_of_the_hard_masked_network():
    net = _trained("stg", sparsity=0.5)
    x = torch.randn(32, 1, 6, 6)
    torch_slt.recalibrate_batchnorm(net, [x[:16], x[16:]])
    net.eval()
    with torch.no_grad():
        conv = torch.nn.functional.conv2d(x, net[0].weight_orig * net[0].weight_mask)  # the ticket's conv
    mean = conv.mean(dim=(0, 2, 3))
    # a cumulative average of two equal halves: the mean of the halves' unbiased variances
    var = torch.stack([conv[:16].var(dim=(0, 2, 3)), conv[16:].var(dim=(0, 2, 3))]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean)
    torch.testing.assert_close(net[1].running_var, var)
    assert int(net[1].num_batches_tracked) == 2
    assert net[1].momentum == 0.1                                 # restored


def test_modes_are_restored_and_gates_are_not_sampled():
    net = _trained("stg")
    net.train()
    net[2].eval()                                                 # a mixed set of modes, kept as it was
    modes = [m.training for m in net.modules()]
    x = torch.randn(16, 1, 6, 6)
    torch_slt.recalibrate_batchnorm(net, [x])
    first = net[1].running_var.clone()
    torch_slt.recalibrate_batchnorm(net, [x])                     # no gate noise: the same statistics
    torch.testing.assert_close(net[1].running_var, first, rtol=0, atol=0)
    assert [m.training for m in net.modules()] == modes


def test_batches_may_be_pairs_mappings_and_a_loader_with_a_step_cap():
    x = torch.randn(40, 1, 6, 6)
    a, b, c = _trained(), _trained(), _trained()
    torch_slt.recalibrate_batchnorm(a, [x[:20]])
    torch_slt.recalibrate_batchnorm(b, [(x[:20], torch.zeros(20)), (x[20:], torch.zeros(20))], steps=1)
    loader = torch.utils.data.DataLoader(TensorDataset(x[:20], torch.zeros(20)), batch_size=20)
    torch_slt.recalibrate_batchnorm(c, loader)
    for other in (b, c):
        torch.testing.assert_close(other[1].running_mean, a[1].running_mean)
        assert int(other[1].num_batches_tracked) == 1

    class Keywords(nn.Module):                                    # a Hugging Face style forward(**batch)
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, pixel_values):
            return self.body(pixel_values)

    d = Keywords(_trained())
    torch_slt.recalibrate_batchnorm(d, [{"pixel_values": x[:20], "labels": torch.zeros(20)}])
    torch.testing.assert_close(d.body[1].running_mean, a[1].running_mean)


def test_bad_input_is_refused_and_the_model_left_unchanged():
    net = _trained()
    before = {k: v.clone() for k, v in net[1].state_dict().items()}
    with pytest.raises(ValueError, match="no input"):
        torch_slt.recalibrate_batchnorm(net, [])
    with pytest.raises(ValueError, match="steps=0"):
        torch_slt.recalibrate_batchnorm(net, [torch.randn(4, 1, 6, 6)], steps=0)
    with pytest.raises(RuntimeError):                             # a forward that fails half way
        torch_slt.recalibrate_batchnorm(net, [torch.randn(4, 1, 6, 6), torch.randn(4, 2, 6, 6)])
    for key, value in net[1].state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert net[1].momentum == 0.1 and net.training


def test_report_and_finalize_warn_until_the_statistics_are_recalibrated():
    net = _trained("stg", lam=0.1)
    net.eval()
    found = _relevant_warnings(lambda: torch_slt.report(net))
    assert len(found) == 1 and "recalibrate_batchnorm" in found[0] and "'stg'" in found[0]
    torch_slt.recalibrate_batchnorm(net, [torch.randn(8, 1, 6, 6)])
    assert stale_batchnorm(net) == []
    assert _relevant_warnings(lambda: torch_slt.report(net)) == []
    net.train()
    net(torch.randn(8, 1, 6, 6))                                  # training again: stale again
    assert stale_batchnorm(net) == ["1"]
    net.eval()
    assert len(_relevant_warnings(lambda: torch_slt.finalize(net))) == 1


@pytest.mark.parametrize("method, kwargs", [("edgepopup", {"sparsity": 0.5}),
                                            ("magnitude", {"sparsity": 0.5})])
def test_no_warning_when_training_runs_the_hard_mask(method, kwargs):
    net = _trained(method, **kwargs)
    net.eval()
    assert stale_batchnorm(net) == []
    assert _relevant_warnings(lambda: torch_slt.report(net)) == []


@pytest.mark.parametrize("method", ["stg", "hardconcrete", "supermask", "cs"])
def test_every_relaxed_method_is_flagged(method):
    assert torch_slt.get_method(method).relaxed_forward
    assert stale_batchnorm(_trained(method)) == ["1"]


def test_a_model_without_batchnorm_is_returned_untouched():
    net = torch_slt.apply(nn.Sequential(nn.Linear(4, 3)), "stg")
    assert torch_slt.recalibrate_batchnorm(net, []) is net        # nothing to do, nothing asked of batches


def test_fit_recalibrates_after_every_epoch_unless_told_not_to():
    from torch_slt.experiment.train import TrainConfig, fit

    torch.manual_seed(1)
    data = TensorDataset(torch.randn(48, 1, 6, 6), torch.randint(0, 3, (48,)))
    fitted = torch_slt.apply(_net(), "stg", sparsity=0.5)
    fit(fitted, data, data, TrainConfig(epochs=2, batch_size=16, quiet=True))
    assert stale_batchnorm(fitted) == []
    # the statistics are a recalibration on the unshuffled training images
    again = {k: v.clone() for k, v in fitted[1].state_dict().items()}
    torch_slt.recalibrate_batchnorm(fitted, [data.tensors[0]])
    for key in ("running_mean", "running_var"):
        torch.testing.assert_close(fitted[1].state_dict()[key], again[key])

    kept = torch_slt.apply(_net(), "stg", sparsity=0.5)
    fit(kept, data, None, TrainConfig(epochs=1, batch_size=16, quiet=True, recalibrate_batchnorm=False))
    assert stale_batchnorm(kept) == ["1"]


def test_the_compaction_name_is_the_core_function():
    from torch_slt.structured import compaction

    assert compaction.recalibrate_batchnorm is torch_slt.recalibrate_batchnorm
