"""PyTorch's own pruning tests (``test/nn/test_pruning.py`` in pytorch/pytorch), ported to every
registered torch_slt method.

They encode what a torch user expects of a ``BasePruningMethod``. Each test names the torch test it
ports; a check that does not apply to a method says why (a ``pytest.skip`` with the reason, or a
comment). torch_slt-specific differences, stated once:

* ``amount`` is a fraction only (torch also reads an int as a count of weights): refused with a message.
* a tensor is gated once: stacking a second method (``PruningContainer``) is refused, not combined.
* learned masks (``stg``, ``hardconcrete``, ``supermask``, ``edgepopup``) are trained, so there is no
  mask to compute from a tensor at prune time, and in train mode the weight is relaxed or sampled, not
  ``orig * mask``: the checks run in eval mode, where the hard mask is used.
* ``importance_scores`` rank raw (higher = keep; GraSP's scores are signed), torch's L1 ranks ``|scores|``.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_slt
from cases import METHOD_CASES

METHODS = torch_slt.list_methods()
DATA = (torch.randn(4, 5), torch.randint(0, 2, (4,)))
#: Fixed-mask methods that score with a forward pass of the whole model: on one tensor they rank
#: ``importance_scores`` (torch's argument), which these tests always give them.
WHOLE_MODEL = ("snip", "grasp", "synflow")
#: Methods that keep an exact count of weights (torch's ``round(amount * n)``) at apply time.
EXACT_COUNT = [m for m in METHODS if not torch_slt.get_method(m).learned] + ["edgepopup"]


def cls_of(method):
    return torch_slt.get_method(method)


def is_learned(method) -> bool:
    return cls_of(method).learned


def kwargs_for(method, **override):
    kwargs = {k: v for k, v in METHOD_CASES[method](DATA).items() if k != "scope"}
    if "amount" in override:
        kwargs.pop("sparsity", None)
    kwargs.update(override)
    return kwargs


def gate(module, name, method, *, scores=None, **override):
    """torch_slt.prune.<method>(module, name, ...) with the arguments every method needs."""
    kwargs = kwargs_for(method, **override)
    if method in WHOLE_MODEL and scores is None:
        scores = torch.rand_like(getattr(module, name))
    if scores is not None:
        kwargs["importance_scores"] = scores
    return getattr(torch_slt.prune, method)(module, name, **kwargs)


def set_hard_mask(module, name, method, mask):
    """Make a gated tensor's hard mask equal ``mask``: through the learned tensor of a learned method."""
    hook = torch_slt.core.base.pruning_hook(module, name)
    field = module._parameters.get(f"{name}_{cls_of(method).fields[0]}") if is_learned(method) else None
    with torch.no_grad():
        if method == "edgepopup":  # keeps the top |s|: large where kept (sparsity matches the mask)
            field.copy_(torch.where(mask.bool(), 2.0, 0.5))
        elif field is not None:
            field.copy_(torch.where(mask.bool(), 8.0, -8.0))
    if not is_learned(method):
        module._buffers[f"{name}_mask"].copy_(mask.bool())
    assert torch.equal(hook.hard_mask(module), mask.bool())


def modules_and_names():
    return [(factory, name) for factory in (lambda: nn.Linear(5, 7), lambda: nn.Conv3d(2, 2, 2))
            for name in ("weight", "bias")]


# --------------------------------------------------------------------------------------- amount
@pytest.mark.parametrize("method", METHODS)
def test_validate_pruning_amount_init(method):
    """torch: test_validate_pruning_amount_init (strings, floats outside [0, 1], negative ints)."""
    if "sparsity" not in cls_of(method).__init__.__code__.co_varnames:
        pytest.skip(f"{method} has no sparsity/amount: its kept fraction emerges from training")
    base = {k: v for k, v in kwargs_for(method).items() if k != "sparsity"}
    with pytest.raises(TypeError, match="amount must be a float"):
        cls_of(method)(**base, amount="I'm a string")
    for bad in (1.1, 20.0, -0.5, 1.0):  # torch accepts 1.0 (prune everything); a ticket must keep one
        with pytest.raises(ValueError, match=rf"amount={bad!r} is outside \[0, 1\)"):
            cls_of(method)(**base, amount=bad)
    # torch reads an int as a number of weights (amount=1500): torch_slt takes fractions only.
    for count in (-10, 0, 1, 1500):
        with pytest.raises(TypeError, match=rf"amount={count} is an int.*fraction"):
            cls_of(method)(**base, amount=count)
    assert cls_of(method)(**base, amount=0.34).sparsity == 0.34
    assert cls_of(method)(**base, amount=0.0).sparsity == 0.0
    with pytest.raises(TypeError, match="both sparsity=0.5 and amount=0.5"):
        cls_of(method)(**base, sparsity=0.5, amount=0.5)


@pytest.mark.parametrize("method", METHODS)
def test_compute_nparams_to_prune(method):
    """torch: test_compute_nparams_toprune / test_validate_pruning_amount: ``amount`` as a fraction
    prunes ``round(amount * n)`` weights, as torch's ``_compute_nparams_toprune``."""
    if "sparsity" not in cls_of(method).__init__.__code__.co_varnames:
        pytest.skip(f"{method} has no sparsity/amount: its kept fraction emerges from training")
    if method not in EXACT_COUNT:
        pytest.skip(f"{method}: a sparsity given to a gate method is reached in training along its schedule "
                    f"(tests/methods/test_stg.py), not a count chosen at apply")
    for amount, size in ((0.4, 17), (0.0, 15), (0.34, 50)):
        m = gate(nn.Linear(size, 1, bias=False), "weight", method, amount=amount)
        expected = prune._compute_nparams_toprune(amount, size)
        assert int((~m.weight_mask).sum()) == expected


def test_apply_takes_amount_as_torch_name_for_sparsity():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    torch_slt.apply(model, "magnitude", amount=0.5)
    assert torch_slt.report(model).sparsity == 0.5
    with pytest.raises(TypeError, match="both sparsity=0.5 and amount=0.5"):
        torch_slt.apply(nn.Linear(4, 4), "edgepopup", sparsity=0.5, amount=0.5)


# ------------------------------------------------------------------------------- state naming
@pytest.mark.parametrize("method", METHODS)
def test_pruning_sizes_orig_and_new_weight(method):
    """torch: test_random_pruning_sizes, test_random_pruning_orig, test_random_pruning_new_weight, on
    Linear and Conv3d, ``weight`` and ``bias``."""
    for factory, name in modules_and_names():
        m = factory()
        original = getattr(m, name)
        gate(m, name, method)
        assert getattr(m, name + "_mask").shape == original.shape
        assert getattr(m, name + "_orig") is original  # the same Parameter, values untouched
        assert getattr(m, name).shape == original.shape
        for field in cls_of(method).fields:
            assert getattr(m, f"{name}_{field}").shape == original.shape
        # Learned methods: orig * mask holds in eval mode (train mode relaxes or samples the mask).
        m.eval()
        m(torch.randn(1, 5) if isinstance(m, nn.Linear) else torch.randn(1, 2, 3, 3, 3))
        assert torch.equal(getattr(m, name), original * getattr(m, name + "_mask").to(original.dtype))


KEEP_ALL = {"stg": {}, "hardconcrete": {"lam": 0.1}, "supermask": {"score_init": 1.0}, "cs": {"mask_init": 1.0}}


@pytest.mark.parametrize("method", METHODS)
def test_identity_pruning(method):
    """torch: test_identity_pruning / test_random_pruning_0perc: a mask of ones changes neither the
    forward nor the gradients; two forwards in a row agree. (Eval mode: a learned method's train-mode
    forward samples its gates.)"""
    x = torch.ones(1, 5)
    m = nn.Linear(5, 2)
    before = m(x)
    before.sum().backward()
    grad_w, grad_b = m.weight.grad.clone(), m.bias.grad.clone()
    m.zero_grad()
    extra = KEEP_ALL.get(method, {"sparsity": 0.0})
    if method in KEEP_ALL:
        base = {k: v for k, v in kwargs_for(method).items() if k not in ("sparsity", "lam")}
        torch_slt.prune.gate(m, "weight", method, **base, **extra)
    else:
        gate(m, "weight", method, **extra)
    m.eval()
    assert bool(m.weight_mask.all())
    after = m(x)
    assert torch.equal(before, after)
    after.sum().backward()
    assert torch.equal(m.weight_orig.grad, grad_w) and torch.equal(m.bias.grad, grad_b)
    assert torch.equal(m(x), m(x))


def _hand_mask() -> torch.Tensor:
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 0] = mask[0, 3] = False
    return mask


def _gate_with_hand_mask(method) -> nn.Linear:
    """Linear(5, 2) gated with the mask of torch's mocked compute_mask, by the method's own means:
    importance scores for fixed-mask methods, the learned tensor for learned ones."""
    m = nn.Linear(5, 2)
    mask = _hand_mask()
    if is_learned(method):
        # Learned masks with a fraction to keep (edge-popup, a gate method's sparsity target) keep
        # the top 8 of 10 of their scores: the hand mask keeps 8.
        takes = "sparsity" in kwargs_for(method) or method == "edgepopup"
        gate(m, "weight", method, **({"sparsity": 0.2} if takes else {}))
        set_hard_mask(m, "weight", method, mask)
        m.eval()(torch.ones(1, 5))  # the mask buffer follows the learned tensor at every forward
    else:
        gate(m, "weight", method, scores=mask.float() + torch.rand(2, 5) * 0.1, sparsity=0.2)
    assert torch.equal(m.weight_mask, mask)
    return m.eval()


@pytest.mark.parametrize("method", METHODS)
def test_random_pruning_gradient_and_forward_by_hand(method):
    """torch: test_random_pruning (masked weights get no gradient and are not updated) and
    test_random_pruning_forward (the output, by hand)."""
    m = _gate_with_hand_mask(method)
    mask = _hand_mask()
    y = m(torch.ones(1, 5))
    assert torch.allclose(y[0], (m.weight_orig * mask).sum(1) + m.bias)
    y.sum().backward()
    assert torch.equal(m.weight_orig.grad, mask.float())
    assert torch.equal(m.bias.grad, torch.ones(2))
    old = m.weight_orig.detach().clone()
    with torch.no_grad():
        for p in (m.weight_orig, m.bias):
            p.sub_(p.grad)
    assert m.weight_orig[1, 0] == old[1, 0] and m.weight_orig[0, 3] == old[0, 3]


@pytest.mark.parametrize("method", METHODS)
def test_remove_pruning_forward(method):
    """torch: test_remove_pruning_forward: prune.remove keeps the (eval) forward."""
    m = _gate_with_hand_mask(method)
    x = torch.ones(1, 5)
    y = m(x)
    prune.remove(m, "weight")
    assert torch.equal(y, m(x))


@pytest.mark.parametrize("method", METHODS)
def test_pruning_id_consistency(method):
    """torch: test_pruning_id_consistency: optimizers holding the weight keep working."""
    m = nn.Linear(5, 2, bias=False)
    weight = m.weight
    gate(m, "weight", method)
    assert m.weight_orig is weight
    prune.remove(m, "weight")
    assert m.weight is weight and [id(p) for p in m.parameters()] == [id(weight)]


@pytest.mark.parametrize("method", METHODS)
def test_random_pruning_pickle(method):
    """torch: test_random_pruning_pickle (also after a train-mode forward, which leaves a tensor with
    autograd history on the module)."""
    for factory, name in modules_and_names():
        m = gate(factory(), name, method)
        m(torch.randn(1, 5) if isinstance(m, nn.Linear) else torch.randn(1, 2, 3, 3, 3))
        new = pickle.loads(pickle.dumps(m))
        assert isinstance(new, type(m)) and torch.equal(new._buffers[name + "_mask"],
                                                        m._buffers[name + "_mask"])


# ------------------------------------------------------------------------------- stacking
@pytest.mark.parametrize("method", METHODS)
def test_multiple_pruning_calls_are_refused(method):
    """torch: test_multiple_pruning_calls. torch stacks a second method into a PruningContainer; a
    torch_slt gate is a tensor's only method (a second mask would silently override or be overridden),
    so both orders are refused, and torch's stacking on top of a gate is detected."""
    m = nn.Conv3d(2, 2, 2)
    prune.l1_unstructured(m, name="weight", amount=0.1)
    with pytest.raises(torch_slt.AlreadyGatedError, match="already pruned by 'L1Unstructured'"):
        gate(m, "weight", method)
    assert isinstance(next(iter(m._forward_pre_hooks.values())), prune.L1Unstructured)
    m = gate(nn.Conv3d(2, 2, 2), "weight", method)
    with pytest.raises(torch_slt.AlreadyGatedError, match="already pruned"):
        gate(m, "weight", "magnitude", sparsity=0.5)
    prune.ln_structured(m, name="weight", amount=0.3, n=2, dim=0)  # torch does not ask
    with pytest.raises(torch_slt.AlreadyGatedError, match="stacked on a torch_slt gate"):
        torch_slt.report(m)


@pytest.mark.parametrize("method", METHODS)
def test_pruning_container_compute_mask(method):
    """torch: test_pruning_container / test_pruning_container_compute_mask / test_prune /
    test_prune_importance_scores(_mimic_default): compute_mask inside a PruningContainer respects the
    previous mask (here: prune 2 of the 6 entries still kept, as torch's L1Unstructured(amount=2))."""
    t = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=torch.float32)
    default = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 1]])
    container = prune.PruningContainer()
    container._tensor_name = "test"
    p = cls_of(method)(**kwargs_for(method, **({"sparsity": 2 / 6} if method in EXACT_COUNT else {})))
    p._tensor_name = "test"
    container.add_pruning_method(p)  # accepted: every method is a BasePruningMethod
    if is_learned(method):
        with pytest.raises(TypeError, match="learns its mask during training"):
            container.compute_mask(t, default)
        return
    if method in WHOLE_MODEL:  # scores need a forward pass of the model, not one tensor
        with pytest.raises(TypeError, match="needs the whole model"):
            container.compute_mask(t, default)
        return
    mask = container.compute_mask(t, default)
    assert int(mask.sum()) == 4 and bool((mask <= default).all())
    if method == "magnitude":
        assert torch.equal(mask, torch.tensor([[0, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.float32))
        # test_prune*: called directly, the fraction is of the whole tensor given (2 of 8).
        p = cls_of(method)(amount=0.25)
        assert torch.equal(p.prune(t, default), t * mask)
        scores = torch.tensor([[1, 2, 3, 4], [1.5, 1.6, 1.7, 1.8]])
        assert torch.equal(p.prune(t, default, importance_scores=scores),
                           t * torch.tensor([[0, 1, 1, 0], [0, 1, 0, 1]]))
        assert torch.equal(p.prune(t, default, importance_scores=t), p.prune(t, default))


# ------------------------------------------------------------------------------- exact masks
def test_l1_unstructured_pruning_by_hand():
    """torch: test_l1_unstructured_pruning, for magnitude (the only method whose scores are |w|; the
    others rank by their own scores, checked exactly in tests/methods/). Pruning again is refused
    (one method per tensor, see test_multiple_pruning_calls_are_refused)."""
    m = nn.Linear(4, 2)
    m.weight = nn.Parameter(torch.tensor([[1, 2, 3, 4], [-4, -3, -2, -1]], dtype=torch.float32))
    torch_slt.prune.magnitude(m, "weight", amount=0.25)
    assert torch.equal(m.weight, torch.tensor([[0, 2, 3, 4], [-4, -3, -2, 0]], dtype=torch.float32))


@pytest.mark.parametrize("method", [m for m in METHODS if not torch_slt.get_method(m).learned])
def test_unstructured_pruning_with_importance_scores(method):
    """torch: test_l1_unstructured_pruning_with_importance_scores, for every fixed-mask method (the
    scores replace the method's own). Learned methods refuse importance_scores (next test)."""
    m = nn.Linear(4, 2)
    m.weight = nn.Parameter(torch.tensor([[1, 2, 3, 4], [-4, -3, -2, -1]], dtype=torch.float32))
    scores = torch.tensor([[4, 2, 1, 3], [3, 1, 2, 4]], dtype=torch.float32)  # raw: higher = keep
    gate(m, "weight", method, scores=scores, sparsity=0.25)
    assert torch.equal(m.weight, torch.tensor([[1, 2, 0, 4], [-4, 0, -2, -1]], dtype=torch.float32))


@pytest.mark.parametrize("method", [m for m in METHODS if torch_slt.get_method(m).learned])
def test_learned_methods_refuse_importance_scores(method):
    m = nn.Linear(4, 2)
    with pytest.raises(TypeError, match="importance_scores is for fixed-mask methods"):
        gate(m, "weight", method, scores=torch.rand(2, 4))
    assert "weight" in m._parameters and not prune.is_pruned(m)


@pytest.mark.parametrize("method", METHODS)
def test_unstructured_pruning_same_magnitude(method):
    """torch: test_unstructured_pruning_same_magnitude: with tied scores exactly round(amount * n)
    entries are pruned (a selection, not a threshold that would drop every tied entry)."""
    if method not in EXACT_COUNT:
        pytest.skip(f"{method}: the mask is a threshold on each gate's probability, reached by training")
    t = 2 * torch.randint(-1, 2, (10, 7)).float()
    m = nn.Linear(7, 10, bias=False)
    if method == "edgepopup":
        gate(m, "weight", method, amount=0.2)
        with torch.no_grad():
            m.weight_scores.copy_(t)
        m.eval()(torch.randn(1, 7))
    else:
        gate(m, "weight", method, scores=t.abs(), amount=0.2)
    assert int((~m.weight_mask).sum()) == prune._compute_nparams_toprune(0.2, 70)


@pytest.mark.parametrize("method", METHODS)
def test_structured_pruning_does_not_apply(method):
    """torch: test_random_structured_pruning_amount, test_ln_structured_pruning(_importance_scores).
    Not applicable: every torch_slt method is unstructured (one gate per weight)."""
    assert cls_of(method).PRUNING_TYPE == "unstructured"


@pytest.mark.parametrize("method", METHODS)
def test_remove_pruning(method):
    """torch: test_remove_pruning (remove bakes the mask and restores the parameter name) and
    test_remove_pruning_exception (removing from an unpruned tensor is refused)."""
    for factory, name in modules_and_names():
        m = gate(factory(), name, method).eval()
        m(torch.randn(1, 5) if isinstance(m, nn.Linear) else torch.randn(1, 2, 3, 3, 3))
        assert name + "_orig" in dict(m.named_parameters()) and name + "_mask" in dict(m.named_buffers())
        assert name not in dict(m.named_parameters())
        pruned = getattr(m, name).detach().clone()
        prune.remove(m, name)
        assert name in dict(m.named_parameters())
        assert not [k for k in m.state_dict() if k.startswith(name + "_")]  # orig, mask, gates gone
        assert torch.equal(getattr(m, name), pruned)
        with pytest.raises(ValueError, match="has to be pruned"):
            prune.remove(m, name)
    with pytest.raises(torch_slt.NotGatedError):
        torch_slt.finalize(nn.Linear(2, 2))


# ------------------------------------------------------------------------------- global
def _global_pair():
    m, n = nn.Linear(4, 2), nn.Linear(3, 1)
    m.weight = nn.Parameter(torch.tensor([[1, 2, 3, 4], [-4, -3, -2, -1]], dtype=torch.float32))
    n.weight = nn.Parameter(torch.tensor([[0, 0.1, -2]], dtype=torch.float32))
    return m, n


@pytest.mark.parametrize("method", METHODS)
def test_global_pruning_with_a_torch_slt_method_class(method):
    """torch: test_global_pruning / test_global_pruning_importance_scores, with the method class as
    ``pruning_method``. torch ranks the concatenated tensors with the method's compute_mask and
    installs its own CustomFromMask (prune.remove bakes it). Works for magnitude and random; the
    whole-model scorers and the learned methods are refused with what to use instead."""
    m, n = _global_pair()
    params = ((m, "weight"), (n, "weight"))
    kwargs = {"amount": 4 / 11} if "amount" in cls_of(method).__init__.__code__.co_varnames else {}
    if method == "random":
        kwargs["seed"] = 0
    if is_learned(method) or method in WHOLE_MODEL:
        if method in WHOLE_MODEL:
            kwargs.update({k: v for k, v in kwargs_for(method).items() if k != "sparsity"})
        with pytest.raises(TypeError, match="learns its mask|needs the whole model"):
            prune.global_unstructured(params, pruning_method=cls_of(method), **kwargs)
        assert not prune.is_pruned(m) and not prune.is_pruned(n)
        return
    prune.global_unstructured(params, pruning_method=cls_of(method), **kwargs)
    assert int((~m.weight_mask.bool()).sum() + (~n.weight_mask.bool()).sum()) == 4
    if method == "magnitude":
        assert torch.equal(m.weight, torch.tensor([[0, 2, 3, 4], [-4, -3, -2, 0]], dtype=torch.float32))
        assert torch.equal(n.weight, torch.tensor([[0, 0, -2]], dtype=torch.float32))
        m2, n2 = _global_pair()
        scores = {(m2, "weight"): torch.tensor([[4, 2, 1, 3], [3, 1, 2, 4]], dtype=torch.float32),
                  (n2, "weight"): torch.tensor([[0, 10.0, 0.2]])}
        prune.global_unstructured(((m2, "weight"), (n2, "weight")), pruning_method=cls_of(method),
                                  amount=4 / 11, importance_scores=scores)
        assert torch.equal(m2.weight, torch.tensor([[1, 2, 0, 4], [-4, 0, -2, -1]], dtype=torch.float32))
        assert torch.equal(n2.weight, torch.tensor([[0, 0.1, 0]], dtype=torch.float32))


def test_custom_from_mask_does_not_apply():
    """torch: test_custom_from_mask_pruning. Not applicable: CustomFromMask is torch's own method; the
    torch_slt equivalent for a chosen mask is a fixed-mask method's ``importance_scores`` (checked in
    test_unstructured_pruning_with_importance_scores)."""
    assert not any(issubclass(torch_slt.get_method(m), prune.CustomFromMask) for m in METHODS)


# ------------------------------------------------------------------------------- rollback
@pytest.mark.parametrize("method", METHODS)
def test_pruning_rollback(method, monkeypatch):
    """torch: test_pruning_rollback: a failure while computing the mask leaves no half-gated module."""
    def boom(self, module):
        raise RuntimeError("HA!")

    monkeypatch.setattr(cls_of(method), "hard_mask", boom)
    for factory, name in modules_and_names():
        m = factory()
        original = getattr(m, name)
        with pytest.raises(RuntimeError, match="HA!"):
            gate(m, name, method)
        assert m._parameters[name] is original
        assert name + "_mask" not in dict(m.named_buffers())
        assert not [k for k in dict(m.named_parameters()) if k.startswith(name + "_")]
        assert not m._forward_pre_hooks and not m._forward_hooks


# ------------------------------------------------------------------------------- serialization
def _seq():
    return nn.Sequential(nn.Linear(5, 10), nn.ReLU(), nn.Linear(10, 1))


@pytest.mark.parametrize("method", METHODS)
def test_pruning_serialization_model(method, tmp_path):
    """torch: test_pruning_serialization_model: torch.save of the whole gated model loads back with
    weight_orig / weight_mask and the same (eval) weight."""
    model = _seq()
    gate(model[0], "weight", method)
    keys = model.state_dict()
    assert "0.weight_orig" in keys and "0.weight_mask" in keys and "0.weight" not in keys
    model.eval()(torch.randn(1, 5))
    pruned = model[0].weight
    torch.save(model, tmp_path / "m.pt")
    new = torch.load(tmp_path / "m.pt", weights_only=False)
    assert "0.weight_orig" in new.state_dict() and "0.weight" not in new.state_dict()
    assert torch.equal(pruned, new[0].weight)
    assert torch.equal(new(torch.ones(1, 5)), model(torch.ones(1, 5)))


@pytest.mark.parametrize("method", METHODS)
def test_pruning_serialization_state_dict(method, tmp_path):
    """torch: test_pruning_serialization_state_dict: after remove, the state_dict has the plain keys
    and loads into a fresh model (strictly) with the pruned weight."""
    model = _seq()
    gate(model[0], "weight", method)
    model.eval()(torch.randn(1, 5))
    pruned = model[0].weight.detach().clone()
    prune.remove(model[0], "weight")
    assert list(model.state_dict()) == list(_seq().state_dict())
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    new = _seq()
    new.load_state_dict(torch.load(tmp_path / "sd.pt"))
    assert torch.equal(new[0].weight, pruned)


@pytest.mark.parametrize("method", METHODS)
def test_rnn_pruning(method):
    """torch: test_rnn_pruning: an LSTM weight (not called ``weight``) is gated and removed; the LSTM's
    own weight list follows (after a train-mode forward, deepcopy works and remove puts the Parameter
    back, not the last relaxed tensor)."""
    lstm = nn.LSTM(4, 4)
    gate(lstm, "weight_ih_l0", method)
    assert sum(isinstance(p, nn.Parameter) for p in lstm._flat_weights) == 3
    lstm.train()
    lstm(torch.randn(3, 1, 4))[0].sum().backward()
    copy.deepcopy(lstm)
    prune.remove(lstm, "weight_ih_l0")
    assert sum(isinstance(p, nn.Parameter) for p in lstm._flat_weights) == 4
    assert lstm._parameters["weight_ih_l0"] is not None and "weight_ih_l0_orig" not in lstm._parameters
    assert lstm._flat_weights[0] is lstm.weight_ih_l0


# ------------------------------------------------------------------------------- the functional twin
def test_functional_twins_exist_for_every_method_and_return_the_module():
    assert set(dir(torch_slt.prune)) >= set(METHODS)
    m = nn.Linear(3, 2)
    assert torch_slt.prune.stg(m, "weight", lam=0.2) is m
    assert m.weight_orig.requires_grad  # like torch: nothing else changes (apply() would freeze it)
    with pytest.raises(AttributeError, match="no attribute 'l1_unstructured'; the methods are: cs, edgepopup"):
        torch_slt.prune.l1_unstructured  # noqa: B018
    with pytest.raises(TypeError, match="Linear has no parameter 'wieght' to gate; its parameters: weight"):
        torch_slt.prune.magnitude(nn.Linear(3, 2), "wieght", amount=0.5)
    with pytest.raises(TypeError, match="unknown keyword.*lr"):
        torch_slt.prune.stg(nn.Linear(3, 2), "weight", lr=0.1)
