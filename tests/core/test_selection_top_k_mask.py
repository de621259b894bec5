"""torch_slt.core.selection.top_k_mask: exact k, same mask as topk whenever no tie sits at the cut."""

from __future__ import annotations

import math

import pytest
import torch

from torch_slt.core.selection import _HISTOGRAM_MIN, top_k_mask


def _cases() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = 2 * _HISTOGRAM_MIN
    return {
        "normal": torch.randn(n, generator=g),
        "float64 narrow range": torch.rand(n, generator=g, dtype=torch.float64) * 1e-3 + 1.0,
        "negatives and infinities": torch.cat([torch.randn(n, generator=g), torch.full((999,), -math.inf),
                                               torch.full((7,), math.inf)]),
        "many ties": torch.randint(0, 7, (n,), generator=g).float(),
        "signed zeros": torch.cat([torch.zeros(n), -torch.zeros(n)]),
        "half": torch.randn(n, generator=g).half(),
        "small (plain topk)": torch.randn(50, generator=g),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_keeps_exactly_k_of_the_largest(name):
    values = _cases()[name]
    n = values.numel()
    for k in (0, 1, 7, n // 3, n // 2, n - 1, n):
        keep = top_k_mask(values, k)
        assert keep.dtype == torch.bool and keep.shape == (n,) and int(keep.sum()) == k, (name, k)
        if 0 < k < n:
            assert values[keep].float().min() >= values[~keep].float().max(), (name, k)
            ref = torch.zeros(n, dtype=torch.bool)
            ref[torch.topk(values, k).indices] = True
            if values[ref].float().min() > values[~ref].float().max():  # no tie at the cut
                assert torch.equal(keep, ref), (name, k)
