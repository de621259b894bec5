"""The rewind point: the weights every round of iterative pruning restarts from, stored once.

Frankle & Carbin 2019 rewind to the initial weights (iteration 0); Frankle et al., "Linear Mode
Connectivity and the Lottery Ticket Hypothesis", ICML 2020 (https://arxiv.org/abs/1912.05671) rewind to
an early iteration k, which is what makes IMP find tickets in deeper networks. A :class:`RewindPoint`
holds every parameter and buffer of the model (biases and batch-norm statistics included) under the
names of the *plain* model (``fc1.weight``, not ``fc1.weight_orig``), without the masks: the file loads
strictly into the ungated architecture, and :func:`rewind` copies it back bit for bit into a gated
model whatever its current masks.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(3, 2)
    >>> point = capture(model, iteration=0)
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(1.0)
    >>> rewind(model, point)
    >>> torch.equal(model.weight, point.state["weight"])
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from torch_slt.core import api
from torch_slt.experiment.files import atomic_write


@dataclass
class RewindPoint:
    """The weights at ``iteration`` (plain state-dict names, copies)."""

    iteration: int
    state: dict[str, Tensor]

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``path`` (``torch.save``; read back with :meth:`load`, no pickle executed)."""
        atomic_write(path, lambda tmp: torch.save({"iteration": self.iteration, "state": self.state}, tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> RewindPoint:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return cls(int(payload["iteration"]), dict(payload["state"]))


def _gated_names(model: nn.Module) -> dict[str, str]:
    """``{gated key in the state_dict ("fc.weight_orig"): plain key ("fc.weight")}``."""
    names = {}
    for gated in api.gated_tensors(model):
        names[gated.qualified + "_orig"] = gated.qualified
    return names


def capture(model: nn.Module, iteration: int) -> RewindPoint:
    """Copy every parameter and buffer of ``model`` (gated or not) except the masks."""
    renamed = _gated_names(model)
    # Everything else a gate adds (the mask, weight_mu, cs's weight_beta, ...) belongs to the mask.
    gate_state = tuple(plain + "_" for plain in renamed.values())
    state = {renamed.get(k, k): v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
             if k in renamed or not k.startswith(gate_state)}
    return RewindPoint(iteration, state)


def rewind(model: nn.Module, point: RewindPoint) -> None:
    """Copy the weights of ``point`` into ``model`` in place (the masks stay as they are), bit for bit."""
    plain_to_gated = {v: k for k, v in _gated_names(model).items()}
    own = model.state_dict()
    missing = [k for k in point.state if plain_to_gated.get(k, k) not in own]
    if missing:
        raise KeyError(f"rewind(): the model has no {', '.join(missing[:5])}; the rewind point belongs to "
                       f"another architecture")
    with torch.no_grad():
        for key, value in point.state.items():
            own[plain_to_gated.get(key, key)].copy_(value)
