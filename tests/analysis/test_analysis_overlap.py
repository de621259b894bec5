"""Mask overlap, per-layer profiles and the loss along a line, on cases with known answers."""

from __future__ import annotations

import copy

import pytest
import torch

import torch_slt
from torch_slt.analysis import (barrier, chance_jaccard, effective_state, layer_profile, loss_along_line,
                                mask_overlap, masks_of, overlap_matrix)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 3))


def test_identical_masks_overlap_one_and_disjoint_zero():
    a = torch_slt.apply(_net(), "magnitude", sparsity=0.7)
    result = mask_overlap(a, a)
    assert result.jaccard == 1.0 and all(layer.jaccard == 1.0 for layer in result.layers)
    m = {"w": torch.tensor([True, True, False, False])}
    assert mask_overlap(m, {"w": ~m["w"]}).jaccard == 0.0


def test_gated_and_finalized_tickets_give_the_same_masks():
    gated = torch_slt.apply(_net(), "magnitude", sparsity=0.6, scope="layer")
    finalized = torch_slt.finalize(copy.deepcopy(gated))
    a, b = masks_of(gated), masks_of(finalized)
    assert a.keys() == b.keys() == {"1.weight", "3.weight"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert layer_profile(finalized)["1.weight"] == pytest.approx(0.6, abs=1 / 512)


def test_independent_random_masks_overlap_as_predicted():
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    for da, db in ((0.1, 0.1), (0.3, 0.05), (0.5, 0.5)):
        a = torch.zeros(n, dtype=torch.bool)
        a[torch.randperm(n, generator=gen)[:int(da * n)]] = True
        b = torch.zeros(n, dtype=torch.bool)
        b[torch.randperm(n, generator=gen)[:int(db * n)]] = True
        result = mask_overlap({"w": a}, {"w": b})
        assert result.chance == pytest.approx(chance_jaccard(da, db), rel=1e-6)
        # hypergeometric: the intersection's sd is about sqrt(n da db) / n, so 3 % relative is > 5 sd here
        assert result.jaccard == pytest.approx(chance_jaccard(da, db), rel=0.03)


def test_overall_chance_uses_per_layer_densities():
    a = {"x": torch.ones(100, dtype=torch.bool), "y": torch.tensor([True] * 10 + [False] * 90)}
    # layer x: chance 1 (both full, 100 shared); layer y: 100 * 0.1 * 0.1 = 1 expected shared
    result = mask_overlap(a, a)
    assert result.chance == pytest.approx(101 / (110 + 110 - 101))


def test_overlap_refuses_different_architectures():
    with pytest.raises(ValueError, match="share no gated tensor"):
        mask_overlap({"a": torch.ones(3, dtype=torch.bool)}, {"b": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        mask_overlap({"a": torch.ones(3, dtype=torch.bool)}, {"a": torch.ones(4, dtype=torch.bool)})


def test_overlap_matrix_is_symmetric_with_unit_diagonal():
    tickets = [torch_slt.apply(_net(), "random", sparsity=0.5, seed=s) for s in range(3)]
    matrix = overlap_matrix(tickets)
    assert torch.equal(matrix, matrix.T)
    assert torch.equal(matrix.diagonal(), torch.ones(3, dtype=torch.float64))
    assert 0.2 < float(matrix[0, 1]) < 0.5  # chance at density 0.5 is 1/3


def test_barrier_and_line_endpoints():
    assert barrier([1.0, 1.0, 1.0], [0.0, 0.5, 1.0]) == 0.0
    assert barrier([1.0, 2.5, 2.0], [0.0, 0.5, 1.0]) == pytest.approx(1.0)
    x, y = torch.rand(60, 1, 4, 4), torch.randint(0, 3, (60,))
    random_net = _net()
    ticket = torch_slt.apply(copy.deepcopy(random_net), "magnitude", sparsity=0.8, scope="layer")
    line = loss_along_line(random_net, ticket, (x, y), steps=5)
    assert line.alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
    ce = torch.nn.functional.cross_entropy
    assert line.loss[0] == pytest.approx(float(ce(random_net(x).detach(), y)), rel=1e-5)
    assert line.loss[-1] == pytest.approx(float(ce(ticket.eval()(x).detach(), y)), rel=1e-5)
    assert torch_slt.is_gated(ticket)  # the ticket was not finalized in place
    # the midpoint's weights are the mean of the effective weights: w * (1 + m) / 2
    w, m = random_net[1].weight.detach(), masks_of(ticket)["1.weight"]
    state = effective_state(ticket)
    assert torch.equal(state["1.weight"], w * m)
    same = loss_along_line(ticket, ticket, (x, y), steps=3)
    assert same.loss_barrier == 0.0 and len(set(same.loss)) == 1
