"""The sanity-check controls keep every tensor's kept count, change only what they say, and are seeded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.masks import hard_masks
from torch_slt.lottery import CONTROLS, control


def _ticket(method: str = "magnitude") -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4))
    if method == "stg":
        torch_slt.apply(net, "stg", lam=0.1)
        with torch.no_grad():
            for p in torch_slt.mask_parameters(net):
                p.normal_()
    else:
        torch_slt.apply(net, method, sparsity=0.6, scope="layer")
    return net


def _weights(model):
    return {n + "." + h._tensor_name: m._parameters[h._tensor_name + "_orig"].detach().clone()
            for n, m, h in torch_slt.gated_tensors(model)}


@pytest.mark.parametrize("method", ["magnitude", "stg"])
@pytest.mark.parametrize("kind", CONTROLS)
def test_controls_keep_per_layer_counts_and_leave_the_ticket_alone(kind, method):
    ticket = _ticket(method)
    before = {k: v.clone() for k, v in ticket.state_dict().items()}
    masks, weights = hard_masks(ticket), _weights(ticket)
    twin = control(ticket, kind, seed=1)
    assert all(torch.equal(before[k], v) for k, v in ticket.state_dict().items())
    new_masks, new_weights = hard_masks(twin), _weights(twin)
    for name in masks:
        assert int(new_masks[name].sum()) == int(masks[name].sum()), name
        assert torch.equal(new_weights[name].flatten().sort().values, weights[name].flatten().sort().values)
    changed_mask = any(not torch.equal(new_masks[n], masks[n]) for n in masks)
    changed_weights = any(not torch.equal(new_weights[n], weights[n]) for n in masks)
    assert changed_mask == (kind in ("random_mask", "shuffle"))
    assert changed_weights == (kind in ("reinit", "shuffle", "resample"))


def test_resample_moves_values_among_the_kept_positions_only():
    ticket = _ticket()
    twin = control(ticket, "resample", seed=2)
    for name, w in _weights(ticket).items():
        mask = hard_masks(ticket)[name]
        new = _weights(twin)[name]
        assert torch.equal(new[~mask], w[~mask])
        assert torch.equal(new[mask].sort().values, w[mask].sort().values)


def test_shuffle_moves_the_kept_values_with_the_mask():
    ticket = _ticket()
    twin = control(ticket, "shuffle", seed=2)
    for name, w in _weights(ticket).items():
        kept_before = w[hard_masks(ticket)[name]].sort().values
        kept_after = _weights(twin)[name][hard_masks(twin)[name]].sort().values
        assert torch.equal(kept_before, kept_after)


def test_random_mask_keeps_weights_in_place_and_is_recorded_as_random():
    ticket = _ticket("stg")
    twin = control(ticket, "random_mask", seed=4)
    assert {type(h).name for _, _, h in torch_slt.gated_tensors(twin)} == {"random"}
    for name, w in _weights(ticket).items():
        assert torch.equal(_weights(twin)[name], w)


def test_controls_are_seeded_and_leave_the_global_rng_alone():
    ticket = _ticket()
    state = torch.get_rng_state()
    a, b, c = (control(ticket, "random_mask", seed=s) for s in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(hard_masks(a)[n], hard_masks(b)[n]) for n in hard_masks(a))
    assert any(not torch.equal(hard_masks(a)[n], hard_masks(c)[n]) for n in hard_masks(a))


def test_reinit_with_an_init_function_draws_fresh_weights_and_keeps_the_mask():
    ticket = _ticket()

    def init(model):
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.constant_(m.weight, 0.25)

    twin = control(ticket, "reinit", seed=0, init=init)
    assert all(bool((w == 0.25).all()) for w in _weights(twin).values())
    assert all(torch.equal(hard_masks(twin)[n], m) for n, m in hard_masks(ticket).items())


def test_bad_controls_are_refused():
    with pytest.raises(ValueError, match="kind='shufle'"):
        control(_ticket(), "shufle")
    with pytest.raises(ValueError, match="no mask"):
        control(nn.Linear(2, 2), "reinit")
    with pytest.raises(ValueError, match="init= is for 'reinit'"):
        control(_ticket(), "random_mask", init=lambda m: None)
