"""Keyword arguments that every registered method runs the contract tests with.

Adding a method: add one entry here (the contract suite fails until you do), then write
``tests/methods/test_<name>.py`` with its exact tests.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

# name -> (data batch) -> kwargs for torch_slt.apply
METHOD_CASES: dict[str, Callable[[tuple[torch.Tensor, torch.Tensor]], dict[str, Any]]] = {
    "stg": lambda data: {"lam": 0.1},
    "magnitude": lambda data: {"sparsity": 0.5},
    "random": lambda data: {"sparsity": 0.5, "seed": 0},
    "snip": lambda data: {"sparsity": 0.5, "data": data},
    "grasp": lambda data: {"sparsity": 0.5, "data": data},
    # A few rounds keep the suite fast; tests/methods/test_synflow.py runs the default 100.
    "synflow": lambda data: {"sparsity": 0.5, "data": data, "iterations": 3},
    # The adaptive-lam path (sparsity target) is the harder one to resume exactly: test it here.
    "hardconcrete": lambda data: {"sparsity": 0.5},
    # Global scope shares one selection object between the hooks: deepcopy/pickle/resume check it.
    "edgepopup": lambda data: {"sparsity": 0.5, "scope": "global"},
    "supermask": lambda data: {},
    # Weights trained with the mask; total_steps anneals beta, whose buffer the resume test checks.
    "cs": lambda data: {"lam": 0.1, "total_steps": 10},
}

# The fraction removed that a fixed-mask case above asks for (checked exactly by the contract suite).
REQUESTED_SPARSITY = 0.5
