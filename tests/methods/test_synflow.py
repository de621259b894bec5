"""synflow: hand-computed products, conservation, float64, the iterative schedule, bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import torch_slt
from _fixed import batch as image_batch
from _fixed import check_apply_preserves_state, check_bad_input, stateful_net
from torch_slt.core.selection import keep_count, keep_top
from torch_slt.core.targets import select_targets


def synflow(**kwargs):
    return torch_slt.get_method("synflow")(**kwargs)


def net(*sizes: int, seed: int = 0, relu: bool = True, positive: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b, bias=False), nn.ReLU()] if relu else [nn.Linear(a, b, bias=False)]
    model = nn.Sequential(*layers[:-1] if relu else layers)
    if positive:
        with torch.no_grad():
            for p in model.parameters():
                p.abs_()
    return model


def test_scores_on_a_positive_two_layer_net_equal_the_hand_computed_products():
    model = net(3, 4, 2, positive=True)
    w1, w2 = (m.weight.detach().double() for m in (model[0], model[2]))
    # R = 1^T W2 W1 1, so dR/dW1[j, i] = sum_k W2[k, j] and dR/dW2[k, j] = sum_i W1[j, i].
    expected = [w1 * w2.sum(0)[:, None], w2 * w1.sum(1)[None, :]]
    scores = synflow(sparsity=0.5, input_shape=(3,)).scores(model, select_targets(model))
    for s, e in zip(scores, expected):
        assert s.dtype == torch.float64
        torch.testing.assert_close(s, e, rtol=1e-12, atol=0)
    # Every path carries R, so each layer's scores sum to R (conservation).
    r = float(w2.sum(0) @ w1.sum(1))
    assert [float(s.sum()) for s in scores] == pytest.approx([r, r], rel=1e-12)


def test_signs_are_ignored_scores_use_absolute_weights():
    signed = net(3, 4, 2, seed=1)
    positive = net(3, 4, 2, seed=1, positive=True)
    got = synflow(sparsity=0.5, input_shape=(3,)).scores(signed, select_targets(signed))
    want = synflow(sparsity=0.5, input_shape=(3,)).scores(positive, select_targets(positive))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_conservation_every_layer_sums_to_the_same_flow():
    model = net(5, 7, 6, 4, 3, seed=2)  # signed weights, ReLUs, no biases
    scores = synflow(sparsity=0.5, input_shape=(5,)).scores(model, select_targets(model))
    sums = [float(s.sum()) for s in scores]
    assert sums == pytest.approx([sums[0]] * len(sums), rel=1e-10)


def test_scored_in_float64_where_float32_would_overflow():
    model = net(*[8] * 41, relu=False)  # 40 layers: R ~ (8 * mean|w| * 8)^40
    with torch.no_grad():
        for m in model:
            m.weight.mul_(30.0)
        positive = copy.deepcopy(model)
        for m in positive:
            m.weight.abs_()
        assert not torch.isfinite(positive(torch.ones(1, 8)).sum())  # float32 R overflows
    scores = synflow(sparsity=0.5, input_shape=(8,)).scores(model, select_targets(model))
    assert all(torch.isfinite(s).all() and s.dtype == torch.float64 for s in scores)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_masked_weights_score_zero():
    model = net(3, 4, 2, positive=True)
    targets = select_targets(model)
    masks = [torch.rand_like(m.weight) > 0.5 for _, m in targets]
    scores = synflow(sparsity=0.5, input_shape=(3,)).scores(model, targets, masks)
    assert all((s[~m] == 0).all() for s, m in zip(scores, masks))


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_iterations_follow_the_schedule_and_pruned_weights_stay_pruned(schedule, scope):
    model = net(6, 8, 5, 3, seed=3)
    targets = select_targets(model)
    method = synflow(sparsity=0.9, input_shape=(6,), iterations=4, schedule=schedule, scope=scope)
    # The reference loop, written out: score with the current masks, keep the schedule's fraction.
    masks = [torch.ones_like(m.weight, dtype=torch.bool) for _, m in targets]
    for t in range(1, 5):
        density = 0.1 ** (t / 4) if schedule == "exponential" else 1 - 0.9 * t / 4
        scores = [s.masked_fill(~m, -math.inf) for s, m in zip(method.scores(model, targets, masks), masks)]
        if scope == "global":
            new = keep_top(scores, 1 - density if t < 4 else 0.9)
        else:
            new = [keep_top([s], 1 - density if t < 4 else 0.9)[0] for s in scores]
        assert all(not (n & ~m).any() for n, m in zip(new, masks))  # nothing pruned comes back
        masks = new
    torch_slt.apply(model, "synflow", sparsity=0.9, input_shape=(6,), iterations=4, schedule=schedule,
                    scope=scope)
    assert [m.weight_mask.tolist() for _, m in targets] == [m.tolist() for m in masks]


def test_density_schedules():
    exp = synflow(sparsity=0.99, input_shape=(1,), iterations=2)
    assert exp.density(1) == pytest.approx(0.1) and exp.density(2) == pytest.approx(0.01)
    lin = synflow(sparsity=0.8, input_shape=(1,), iterations=4, schedule="linear")
    assert [lin.density(t) for t in range(1, 5)] == pytest.approx([0.8, 0.6, 0.4, 0.2])


def test_defaults_are_100_exponential_rounds_and_hit_the_sparsity_exactly():
    method = synflow(sparsity=0.9, input_shape=(6,))
    assert (method.iterations, method.schedule, method.scope) == (100, "exponential", "global")
    model = torch_slt.apply(net(6, 8, 5, 3, seed=4), "synflow", sparsity=0.9, input_shape=(6,))
    rep = torch_slt.report(model)
    assert rep.kept == keep_count(rep.total, 0.9)
    model = torch_slt.apply(net(6, 8, 5, 3, seed=4), "synflow", sparsity=0.9, input_shape=(6,),
                            scope="layer", iterations=10)
    for _, m, _ in torch_slt.gated_tensors(model):
        assert int(m.weight_mask.sum()) == keep_count(m.weight_mask.numel(), 0.9)


def test_input_shape_from_data_equals_explicit_shape():
    a = torch_slt.apply(stateful_net(), "synflow", sparsity=0.7, data=image_batch(), iterations=3)
    b = torch_slt.apply(stateful_net(), "synflow", sparsity=0.7, input_shape=(3, 5, 5), iterations=3)
    assert torch.equal(a.conv.weight_mask, b.conv.weight_mask)
    assert torch.equal(a.head.weight_mask, b.head.weight_mask)
    hook = next(h for _, _, h in torch_slt.gated_tensors(a))
    assert hook.data is None  # no reference to the data stays on the model


def test_apply_leaves_everything_else_unchanged():
    # BatchNorm statistics, modes, flags, grads, RNG: all untouched although scoring took |.| in float64.
    check_apply_preserves_state("synflow", sparsity=0.5, input_shape=(3, 5, 5), iterations=3)


def test_missing_shape_raises_with_the_fix():
    check_bad_input("synflow", stateful_net(), TypeError, r"input_shape=.*data=", sparsity=0.5)


def test_wrong_input_shape_raises_naming_the_expected_input_and_leaves_model_unchanged():
    check_bad_input("synflow", stateful_net(), ValueError, r"expects inputs shaped \(N, 3, H, W\)",
                    sparsity=0.5, input_shape=(4, 5, 5))


@pytest.mark.parametrize("kwargs,error,match", [
    ({"sparsity": 1.0, "input_shape": (3, 5, 5)}, ValueError, "sparsity"),
    ({"sparsity": 0.5, "input_shape": (3, 0, 5)}, ValueError, "input_shape"),
    ({"sparsity": 0.5, "input_shape": "3x5x5"}, ValueError, "input_shape"),
    ({"sparsity": 0.5, "input_shape": (3, 5, 5), "iterations": 0}, ValueError, "iterations"),
    ({"sparsity": 0.5, "input_shape": (3, 5, 5), "schedule": "cosine"}, ValueError, "schedule"),
])
def test_bad_hyperparameters_raise_and_leave_model_unchanged(kwargs, error, match):
    check_bad_input("synflow", stateful_net(), error, match, **kwargs)


def test_gates_of_other_methods_keep_their_masks_while_scoring():
    gated = stateful_net()
    torch_slt.apply(gated, "stg", targets="head", lam=0.1, freeze=False)
    with torch.no_grad():
        gated.head.weight_mu[0] = -1.0   # the stg gate removes row 0 of the head
    plain = stateful_net()
    with torch.no_grad():
        plain.head.weight[0] = 0.0
    method = synflow(sparsity=0.5, input_shape=(3, 5, 5))
    torch.testing.assert_close(method.scores(gated, [("conv", gated.conv)])[0],
                               method.scores(plain, [("conv", plain.conv)])[0])
