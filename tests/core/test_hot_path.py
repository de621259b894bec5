"""The training step is a GPU's hot path: no graph break under torch.compile, no host read.

Every registered learned method runs in each of its modes (``lam``, a sparsity target, structured
gates, edge-popup's layer and global scope on a layer above the histogram threshold):

* ``torch._dynamo.explain`` of a training and an eval forward reports 0 graph breaks;
* ``torch.compile(fullgraph=True)`` trains 3 steps and ends with the masks eager training gives;
* 9 training steps (forward, penalty, backward, optimizer step) make no host read from torch_slt's
  code: ``item``, ``int``/``float``/``bool`` of a tensor, ``nonzero``, ``tolist``, ``cpu`` and
  boolean indexing are patched to count calls whose caller is a torch_slt file.
"""

from __future__ import annotations

import functools
import os
import sys

import pytest
import torch
from torch import nn

import torch_slt
from torch_slt.core.selection import _HISTOGRAM_MIN

MODES = {
    "stg-lam": ("stg", {"lam": 0.1}),
    "stg-target": ("stg", {"sparsity": 0.5, "total_steps": 16}),
    "stg-neuron-target": ("stg", {"sparsity": 0.5, "granularity": "neuron", "total_steps": 16}),
    "stg-neuron-lam": ("stg", {"lam": 0.1, "granularity": "neuron"}),
    "hardconcrete-lam": ("hardconcrete", {"lam": 0.1}),
    "hardconcrete-target": ("hardconcrete", {"sparsity": 0.5, "total_steps": 16}),
    "hardconcrete-channel-target": ("hardconcrete", {"sparsity": 0.5, "granularity": "channel",
                                                     "total_steps": 16}),
    "edgepopup-layer": ("edgepopup", {"sparsity": 0.5}),
    "edgepopup-global": ("edgepopup", {"sparsity": 0.5, "scope": "global"}),
    "supermask": ("supermask", {}),
    "cs": ("cs", {"lam": 0.01, "total_steps": 16}),
}


def _model(mode: str) -> nn.Module:
    torch.manual_seed(0)
    # edge-popup's modes use a first layer above the histogram threshold (CPU top-k path in eager)
    hidden = 256 if mode.startswith("edgepopup") else 16
    width = 300 if mode.startswith("edgepopup") else 8
    assert not mode.startswith("edgepopup") or width * hidden >= _HISTOGRAM_MIN
    model = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 4))
    method, kwargs = MODES[mode]
    return torch_slt.apply(model, method, **kwargs)


def _batch(model: nn.Module, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, model[0].in_features, generator=g), torch.randint(0, 4, (6,), generator=g)


def _train(model: nn.Module, forward, steps: int) -> None:
    opt = torch.optim.Adam(torch_slt.mask_parameters(model), lr=5e-2)
    model.train()
    for step in range(steps):
        x, y = _batch(model, seed=step)
        loss = nn.functional.cross_entropy(forward(x), y) + torch_slt.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("mode", list(MODES))
def test_no_graph_break_in_train_or_eval(mode):
    model = _model(mode)
    _train(model, model, 2)     # past the first step: the steady state of a training run
    x, _ = _batch(model)
    model.train()
    torch._dynamo.reset()
    train = torch._dynamo.explain(model)(x)
    assert train.graph_break_count == 0, train.break_reasons
    model.eval()
    torch._dynamo.reset()
    evaluation = torch._dynamo.explain(model)(x)
    assert evaluation.graph_break_count == 0, evaluation.break_reasons


@pytest.mark.parametrize("mode", list(MODES))
def test_compiled_training_gives_the_masks_of_eager_training(mode):
    eager, compiled = _model(mode), _model(mode)
    torch._dynamo.reset()
    step = torch.compile(compiled, fullgraph=True, backend="aot_eager")
    torch.manual_seed(3)
    _train(eager, eager, 3)
    torch.manual_seed(3)
    _train(compiled, step, 3)
    eager.eval(), compiled.eval()
    x, _ = _batch(eager)
    with torch.no_grad():
        torch.testing.assert_close(step(x), eager(x))
    for (_, m1, h1), (_, m2, h2) in zip(torch_slt.gated_tensors(eager), torch_slt.gated_tensors(compiled)):
        assert torch.equal(h1.hard_mask(m1), h2.hard_mask(m2))


_PACKAGE = os.path.dirname(torch_slt.__file__) + os.sep
_READS = ("item", "tolist", "nonzero", "cpu", "__int__", "__float__", "__bool__", "__index__")


class _HostReads:
    """Counts host reads of tensors made directly by torch_slt's code while active."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._saved: dict[str, object] = {}

    def _from_torch_slt(self) -> str | None:
        frame = sys._getframe(2)
        path = frame.f_code.co_filename
        if path.startswith(_PACKAGE):
            return f"{os.path.relpath(path, _PACKAGE)}:{frame.f_lineno}"
        return None

    def _wrap(self, name: str, original):
        @functools.wraps(original)
        def counted(tensor, *args, **kwargs):
            where = self._from_torch_slt()
            if where is not None:
                self.calls.append(f"{name} at {where}")
            return original(tensor, *args, **kwargs)
        return counted

    def _wrap_getitem(self, original):
        @functools.wraps(original)
        def getitem(tensor, index):
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
                where = self._from_torch_slt()
                if where is not None:
                    self.calls.append(f"boolean indexing at {where}")
            return original(tensor, index)
        return getitem

    def __enter__(self) -> _HostReads:
        for name in _READS + ("__getitem__",):
            self._saved[name] = getattr(torch.Tensor, name)
        for name in _READS:
            setattr(torch.Tensor, name, self._wrap(name, self._saved[name]))
        torch.Tensor.__getitem__ = self._wrap_getitem(self._saved["__getitem__"])
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)


def test_the_host_read_counter_sees_a_read_from_torch_slt():
    from torch_slt.core import selection

    with _HostReads() as reads:
        selection._histogram_top_k(torch.randn(2 * _HISTOGRAM_MIN), 5)   # the CPU path reads counts
    assert reads.calls and all("core/selection.py" in c for c in reads.calls)


@pytest.mark.parametrize("mode", list(MODES))
def test_nine_training_steps_make_no_host_read(mode):
    # edge-popup on a layer below the histogram threshold: the CPU histogram top-k reads counts back
    # (free on a CPU, and only there); this is the path every other device runs
    model = _model_below_histogram(mode) if mode.startswith("edgepopup") else _model(mode)
    with _HostReads() as reads:
        _train(model, model, 9)
    assert reads.calls == []


def _model_below_histogram(mode: str) -> nn.Module:
    torch.manual_seed(0)
    method, kwargs = MODES[mode]
    return torch_slt.apply(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), method, **kwargs)
