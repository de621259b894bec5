"""grasp: scores equal w * (finite-difference Hessian-gradient product); sign convention; bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt
from _fixed import batch as image_batch
from _fixed import check_apply_preserves_state, check_bad_input, stateful_net
from torch_slt.core.selection import keep_top
from torch_slt.core.targets import select_targets


def tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def data(seed: int = 0, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def weight_grads(model: nn.Module, batches, temperature: float) -> list[torch.Tensor]:
    """The gradient of sum_b L_b(logits / T) with respect to the Linear weights (not the biases)."""
    weights = [model[0].weight, model[2].weight]
    loss = sum(nn.functional.cross_entropy(model(x) / temperature, y) for x, y in batches)
    return [g.detach() for g in torch.autograd.grad(loss, weights)]


def finite_difference_scores(model: nn.Module, batches, temperature: float,
                             step: float = 1e-4) -> list[torch.Tensor]:
    """w * Hg by central differences of the gradient along u = g / |g|:
    Hg = |g| (grad(w + h u) - grad(w - h u)) / (2 h)."""
    weights = [model[0].weight, model[2].weight]
    g = weight_grads(model, batches, temperature)
    norm = float(torch.sqrt(sum((gi ** 2).sum() for gi in g)))
    eps = step / norm  # w +- eps g moves the weights by exactly step
    originals = [w.detach().clone() for w in weights]
    grads_at = {}
    for sign in (1, -1):
        with torch.no_grad():
            for w, w0, gi in zip(weights, originals, g):
                w.copy_(w0 + sign * eps * gi)
        grads_at[sign] = weight_grads(model, batches, temperature)
    with torch.no_grad():
        for w, w0 in zip(weights, originals):
            w.copy_(w0)
    hg = [(a - b) / (2 * eps) for a, b in zip(grads_at[1], grads_at[-1])]
    return [w0 * h for w0, h in zip(originals, hg)]


def grasp_scores(model: nn.Module, **kwargs) -> list[torch.Tensor]:
    return torch_slt.get_method("grasp")(**kwargs).scores(model, select_targets(model))


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_scores_equal_finite_difference_hessian_gradient_product(temperature):
    model = tiny()
    batch = data()
    expected = finite_difference_scores(model, [batch], temperature)
    got = grasp_scores(model, sparsity=0.5, data=batch, temperature=temperature)
    for e, s in zip(expected, got):
        assert e.abs().max() > 0
        torch.testing.assert_close(s, e, rtol=1e-5, atol=1e-7 * float(e.abs().max()))


def test_default_temperature_is_200_and_batches_are_summed():
    model = tiny()
    batches = [data(seed=0), data(seed=1)]
    expected = finite_difference_scores(model, batches, 200.0)
    for source in (batches, iter(batches)):   # an iterator is read twice: it is collected first
        got = grasp_scores(model, sparsity=0.5, data=source)
        for e, s in zip(expected, got):
            torch.testing.assert_close(s, e, rtol=1e-5, atol=1e-7 * float(e.abs().max()))


def test_mask_keeps_the_largest_signed_scores():
    model = tiny()
    batch = data()
    scores = finite_difference_scores(model, [batch], 200.0)
    assert min(float(s.min()) for s in scores) < 0 < max(float(s.max()) for s in scores)
    torch_slt.apply(model, "grasp", sparsity=0.5, data=batch)
    expected = keep_top(scores, 0.5)
    assert [model[0].weight_mask.tolist(), model[2].weight_mask.tolist()] == [e.tolist() for e in expected]
    # The most negative score is removed; the most positive kept (reference sign convention).
    flat = torch.cat([s.reshape(-1) for s in scores])
    masks = torch.cat([model[0].weight_mask.reshape(-1), model[2].weight_mask.reshape(-1)])
    assert not masks[flat.argmin()] and masks[flat.argmax()]


def test_layer_scope_hits_the_count_per_tensor():
    model = torch_slt.apply(tiny(), "grasp", sparsity=0.7, data=data(), scope="layer")
    assert int(model[0].weight_mask.sum()) == 12 - round(0.7 * 12)
    assert int(model[2].weight_mask.sum()) == 12 - round(0.7 * 12)


def test_apply_leaves_everything_else_unchanged():
    check_apply_preserves_state("grasp", sparsity=0.5, data=image_batch())


def test_missing_data_raises_with_the_fix():
    check_bad_input("grasp", stateful_net(), TypeError, "data is required", sparsity=0.5)


def test_wrong_shape_data_raises_and_leaves_model_unchanged():
    bad = (torch.randn(4, 3, 5), torch.randint(0, 3, (4,)))
    check_bad_input("grasp", stateful_net(), ValueError, r"expects inputs shaped \(N, 3, H, W\)",
                    sparsity=0.5, data=bad)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"sparsity": 1.0}, ValueError, "sparsity"),
    ({"sparsity": 0.5, "temperature": 0.0}, ValueError, "temperature"),
])
def test_bad_hyperparameters_raise_and_leave_model_unchanged(kwargs, error, match):
    check_bad_input("grasp", stateful_net(), error, match, data=image_batch(), **kwargs)


def _bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)).double()
    with torch.no_grad():  # running statistics far from the batch's, so the two modes differ
        net[1].running_mean.fill_(2.0)
        net[1].running_var.fill_(5.0)
    return net


def test_train_mode_scores_with_batch_statistics_as_the_original():
    model = _bn_net()
    batch = data()
    running = (model[1].running_mean.clone(), model[1].running_var.clone(), int(model[1].num_batches_tracked))

    class Pair(nn.Module):          # finite_difference_scores reads model[0] and model[2]
        def __init__(self, net):
            super().__init__()
            self.net = net

        def __getitem__(self, i):
            return self.net[{0: 0, 2: 3}[i]]

        def forward(self, x):
            return self.net(x)

    model.train()
    expected = finite_difference_scores(Pair(model), [batch], 200.0)   # by hand, in train mode
    model.eval()
    with torch.no_grad():
        model[1].running_mean.copy_(running[0]); model[1].running_var.copy_(running[1])
        model[1].num_batches_tracked.fill_(running[2])
    got = grasp_scores(model, sparsity=0.5, data=batch, mode="train")
    for e, s in zip(expected, got):
        torch.testing.assert_close(s, e, rtol=1e-5, atol=1e-7 * float(e.abs().max()))
    eval_scores = grasp_scores(model, sparsity=0.5, data=batch)
    assert not torch.allclose(eval_scores[0], got[0])              # eval mode: running statistics
    assert not model.training and torch.equal(model[1].running_mean, running[0])
    assert int(model[1].num_batches_tracked) == running[2]


def test_modes_agree_without_batchnorm_and_a_bad_mode_is_refused():
    model, batch = tiny(), data()
    for a, b in zip(grasp_scores(model, sparsity=0.5, data=batch, mode="train"),
                    grasp_scores(model, sparsity=0.5, data=batch)):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="mode='test'"):
        torch_slt.apply(model, "grasp", sparsity=0.5, data=batch, mode="test")
    assert not torch_slt.is_gated(model)


def test_finite_difference_hvp_matches_the_double_backward():
    model = tiny()
    batch = data()
    exact = grasp_scores(model, sparsity=0.5, data=batch, hvp="autograd")
    approx = grasp_scores(model, sparsity=0.5, data=batch, hvp="finite-difference")
    for e, a in zip(exact, approx):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-6 * float(e.abs().max()))
    for w, w0 in zip((model[0].weight, model[2].weight), (tiny()[0].weight, tiny()[2].weight)):
        assert torch.equal(w, w0)                                 # the perturbed weights are put back


def _hard_sigmoid_net() -> nn.Sequential:
    torch.manual_seed(0)   # MobileNetV3's activation: torch has no second derivative for it
    return nn.Sequential(nn.Linear(3, 8), nn.Hardsigmoid(), nn.Linear(8, 3)).double()


def test_a_model_without_second_derivative_falls_back_to_the_difference_with_a_warning():
    batch = data(n=16)
    with pytest.warns(UserWarning, match="hardsigmoid_backward.*central difference"):
        auto = torch_slt.apply(_hard_sigmoid_net(), "grasp", sparsity=0.5, data=batch)
    difference = torch_slt.apply(_hard_sigmoid_net(), "grasp", sparsity=0.5, data=batch,
                                 hvp="finite-difference")
    for i in (0, 2):
        assert torch.equal(auto[i].weight_mask, difference[i].weight_mask)
    assert torch_slt.report(auto).sparsity == 0.5
    with pytest.raises(RuntimeError, match="hardsigmoid_backward"):
        torch_slt.apply(_hard_sigmoid_net(), "grasp", sparsity=0.5, data=batch, hvp="autograd")


def test_a_bad_hvp_is_refused_and_the_model_left_unchanged():
    check_bad_input("grasp", stateful_net(), ValueError, "hvp='newton'", sparsity=0.5, data=image_batch(),
                    hvp="newton")
