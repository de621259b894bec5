"""torch.compile on a gated model: no graph breaks, trains, matches eager.

The suite compiles with the ``aot_eager`` backend: it runs the same Dynamo capture (hooks, the in-place
``weight_mask`` refresh, stg's custom autograd function) and AOTAutograd as inductor, without the C++
code generation that takes a minute on a small shared CPU. ``bench/compile_gated.py`` measures inductor.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_slt


def make():
    torch.manual_seed(0)
    return torch_slt.apply(nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3)), "stg", lam=0.1)


@pytest.mark.slow
def test_compiled_gated_model_has_no_graph_breaks_and_matches_eager():
    eager, twin = make(), make()
    x, y = torch.randn(8, 12), torch.randint(0, 3, (8,))
    for mode in ("train", "eval"):
        getattr(twin, mode)()
        explained = torch._dynamo.explain(twin)(x)
        assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    torch._dynamo.reset()

    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    opts = [torch.optim.Adam(torch_slt.mask_parameters(m), lr=0.1) for m in (eager, twin)]
    for step in range(3):
        for model, forward, opt in ((eager, eager, opts[0]), (twin, compiled, opts[1])):
            model.train()
            torch.manual_seed(step)                       # same gate noise in both
            loss = nn.functional.cross_entropy(forward(x), y) + torch_slt.penalty(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for (name, a), b in zip(torch_slt.named_mask_parameters(eager), torch_slt.mask_parameters(twin)):
        torch.testing.assert_close(a, b, msg=name)
        assert not torch.equal(a, torch.full_like(a, 0.5)), "the gates did not train"
    eager.eval(), twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=0, atol=0)
    for (_, a, _), (_, b, _) in zip(torch_slt.gated_tensors(eager), torch_slt.gated_tensors(twin)):
        assert torch.equal(a.weight_mask, b.weight_mask)
