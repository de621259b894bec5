"""snip: scores equal |g * w| computed by hand; data handling; the model is left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt
from _fixed import batch as image_batch
from _fixed import check_apply_preserves_state, check_bad_input, stateful_net
from torch_slt.core.selection import keep_top
from torch_slt.core.targets import select_targets


def linear2() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)).double()


def data(n: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,), generator=g)


def hand_grads(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """dL/dW1, dL/dW2 of the mean cross entropy of x W1^T W2^T, written out."""
    w1, w2 = model[0].weight.detach(), model[1].weight.detach()
    h = x @ w1.T
    p = torch.softmax(h @ w2.T, dim=1)
    delta = (p - nn.functional.one_hot(y, 2).double()) / len(y)  # dL/dlogits
    return [(delta @ w2).T @ x, delta.T @ h]


def snip_scores(model: nn.Module, **kwargs) -> list[torch.Tensor]:
    method = torch_slt.get_method("snip")(**kwargs)
    return method.scores(model, select_targets(model))


def test_scores_equal_hand_computed_g_times_w():
    model = linear2()
    x, y = data()
    g1, g2 = hand_grads(model, x, y)
    scores = snip_scores(model, sparsity=0.5, data=(x, y))
    torch.testing.assert_close(scores[0], (g1 * model[0].weight).abs().detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(scores[1], (g2 * model[1].weight).abs().detach(), rtol=1e-12, atol=0)


def test_gradients_are_summed_over_batches_before_the_absolute_value():
    model = linear2()
    batches = [data(seed=0), data(seed=1)]
    hand = [a + b for a, b in zip(hand_grads(model, *batches[0]), hand_grads(model, *batches[1]))]
    expected = [(g * m.weight.detach()).abs() for g, m in zip(hand, model)]
    for source in (batches, iter(batches), (b for b in batches)):   # list, iterator, generator
        for got, want in zip(snip_scores(model, sparsity=0.5, data=source), expected):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_mask_keeps_the_top_scores_globally_and_per_layer():
    x, y = data()
    model = linear2()
    g = hand_grads(model, x, y)
    scores = [(gi * m.weight.detach()).abs() for gi, m in zip(g, model)]
    torch_slt.apply(model, "snip", sparsity=0.75, data=(x, y))
    expected = keep_top(scores, 0.75)
    assert [m.weight_mask.tolist() for m in model] == [e.tolist() for e in expected]
    layer = torch_slt.apply(linear2(), "snip", sparsity=0.75, data=(x, y), scope="layer")
    assert [m.weight_mask.tolist() for m in layer] == [keep_top([s], 0.75)[0].tolist() for s in scores]


def test_custom_loss_fn_and_tuple_or_model_output_logits():
    class TupleOut(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x), "extra"

    class LogitsOut(TupleOut):
        def forward(self, x):
            from transformers.modeling_outputs import ImageClassifierOutput

            return ImageClassifierOutput(logits=self.inner(x))

    x, y = data()
    loss_fn = lambda logits, t: nn.functional.cross_entropy(logits, t, reduction="sum")  # noqa: E731
    g1, g2 = hand_grads(linear2(), x, y)
    for wrap in (TupleOut, LogitsOut):
        model = wrap(linear2())
        scores = snip_scores(model, sparsity=0.5, data=(x, y), loss_fn=loss_fn)
        # reduction="sum" multiplies the mean-loss gradient by the batch size
        torch.testing.assert_close(scores[0], (5 * g1 * model.inner[0].weight).abs().detach())
        torch.testing.assert_close(scores[1], (5 * g2 * model.inner[1].weight).abs().detach())


def test_hits_requested_sparsity_exactly():
    model = torch_slt.apply(stateful_net(), "snip", sparsity=0.6, data=image_batch())
    rep = torch_slt.report(model)
    assert rep.kept == rep.total - round(0.6 * rep.total)


def test_apply_leaves_everything_else_unchanged():
    model = check_apply_preserves_state("snip", sparsity=0.5, data=image_batch())
    assert model.conv.weight_orig.requires_grad is False  # it was frozen before: still frozen
    assert model.conv.__dict__["_forward_pre_hooks"]  # gated
    hook = next(h for _, _, h in torch_slt.gated_tensors(model))
    assert hook.data is None and hook.loss_fn is None  # no reference to the data stays on the model


def test_missing_data_raises_with_the_fix():
    check_bad_input("snip", stateful_net(), TypeError, r"data is required.*data=next\(iter", sparsity=0.5)


def test_wrong_shape_data_raises_naming_the_expected_input():
    bad = (torch.randn(4, 5, 5, 5), torch.randint(0, 3, (4,)))   # 5 channels, the model takes 3
    check_bad_input("snip", stateful_net(), ValueError,
                    r"got inputs a tensor of shape \(4, 5, 5, 5\).*expects inputs shaped \(N, 3, H, W\)",
                    sparsity=0.5, data=bad)
    # the model's own exception is chained
    with pytest.raises(ValueError) as info:
        torch_slt.apply(stateful_net(), "snip", sparsity=0.5, data=bad)
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize("bad,error,match", [
    (torch.randn(4, 3, 5, 5), TypeError, "one \\(inputs, targets\\) batch"),
    ([], ValueError, "no batch"),
    ([(torch.randn(4, 3, 5, 5),)], TypeError, "element 0"),
    ((torch.randn(4, 3, 5, 5), torch.randint(0, 3, (5,))), ValueError, "loss_fn failed"),
])
def test_malformed_data_raises_and_leaves_model_unchanged(bad, error, match):
    check_bad_input("snip", stateful_net(), error, match, sparsity=0.5, data=bad)


@pytest.mark.parametrize("sparsity", [1.0, -0.1])
def test_bad_sparsity_raises_and_leaves_model_unchanged(sparsity):
    check_bad_input("snip", stateful_net(), ValueError, "sparsity", sparsity=sparsity, data=image_batch())


def test_bad_loss_fn_raises():
    check_bad_input("snip", stateful_net(), TypeError, "loss_fn", sparsity=0.5, data=image_batch(),
                    loss_fn="cross_entropy")
    check_bad_input("snip", stateful_net(), ValueError, "scalar", sparsity=0.5, data=image_batch(),
                    loss_fn=lambda logits, t: logits)
