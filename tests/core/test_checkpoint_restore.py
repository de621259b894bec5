"""Fixed-mask gates restored from a checkpoint are built through their constructors (issue 18)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.base import SAVED_MASK


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("method, kwargs", [
    ("snip", dict(data=_batch())), ("grasp", dict(data=_batch())), ("synflow", dict(input_shape=(4,))),
    ("synflow", dict(data=_batch())), ("magnitude", dict(rounding="floor")), ("random", dict(seed=3)),
])
def test_a_saved_fixed_mask_loads_without_data_with_its_settings(method, kwargs):
    gated = torch_slt.apply(_net(), method, sparsity=0.6, **kwargs)
    fresh = _net()
    torch_slt.load_state_dict(fresh, gated.state_dict())
    for mine, theirs in zip(torch_slt.gated_tensors(fresh), torch_slt.gated_tensors(gated)):
        assert torch.equal(mine.mask, theirs.mask)
        assert type(mine.hook) is type(theirs.hook)
        assert mine.hook.sparsity == 0.6 and mine.hook.rounding == theirs.hook.rounding
        assert getattr(mine.hook, "data", None) is None   # no reference to any data kept
    x = _batch()[0]
    assert torch.equal(fresh.eval()(x), gated.eval()(x))


def test_a_checkpoint_whose_settings_the_constructor_refuses_is_not_loaded():
    gated = torch_slt.apply(_net(), "snip", sparsity=0.6, data=_batch())
    sd = gated.state_dict()
    sd._metadata = copy.deepcopy(sd._metadata)
    for entry in sd._metadata.values():
        for record in entry.get("torch_slt", {}).values():
            record["config"]["rounding"] = "ceil"    # edited: not a rounding snip knows
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="rounding"):
        torch_slt.load_state_dict(model, sd)
    assert not torch_slt.is_gated(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_method_rebuilt_for_a_saved_mask_refuses_to_score():
    method = torch_slt.get_method("snip").for_saved_mask({"sparsity": 0.5})
    assert method.data is SAVED_MASK
    model = _net()
    with pytest.raises(TypeError, match="saved mask"):
        method.plan(model, [("0", model[0])])
