"""Random pruning at initialisation (``random``): keep a uniformly random subset of the weights.

The control of every pruning-at-initialisation comparison, as the ``Rand`` pruner of Tanaka et al.,
"Pruning neural networks without any data by iteratively conserving synaptic flow" (SynFlow), NeurIPS
2020 (https://arxiv.org/abs/2006.05467): every weight gets an i.i.d. N(0, 1) score and the largest are
kept. In the default global scope each layer therefore keeps close to ``1 - sparsity`` of its weights
(exactly that fraction overall); ``scope="layer"`` makes it exact per tensor. Frankle et al., "Pruning
Neural Networks at Initialization: Why are We Missing the Mark?", ICLR 2021
(https://arxiv.org/abs/2009.08576), discuss why this baseline is strong.

The scores come from the method's own ``torch.Generator``, drawn on the CPU in the order of the targeted
modules: the mask depends only on ``seed`` and the shapes of the targeted tensors (not on the weights or
the device), and the global RNG state is not touched. The generator is seeded with a hash of ``seed``,
not ``seed`` itself: a network whose weights were drawn with ``normal_`` from a generator seeded with
the same number would otherwise get scores *equal* to its own weights (up to scale), and "random"
pruning would silently become signed-magnitude pruning.

Example:
    >>> import torch, torch_slt
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> model = torch_slt.apply(model, "random", sparsity=0.75, seed=0)
    >>> torch_slt.report(model).kept
    44
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from torch_slt.core.base import FixedMaskMethod
from torch_slt.core.validation import is_integer
from torch_slt.core.registry import register_method
from torch_slt.core.targets import target_tensor


@register_method("random")
class Random(FixedMaskMethod):
    """Keep a random ``1 - sparsity`` fraction of the weights, reproducibly from ``seed``.

    Args:
        sparsity: fraction of weights removed, in [0, 1). Required.
        scope: ``"global"`` (default) ranks all targeted tensors together (each layer keeps close to
            ``1 - sparsity``); ``"layer"`` keeps exactly that fraction of each tensor.
        seed: seed of the method's own generator (default 0); the global RNG is not used.
        amount: torch's name for ``sparsity`` (give one of the two).

    ``torch_slt.apply`` leaves ``freeze=False`` for this method (the kept weights are meant to be trained
    afterwards); ``freeze=True`` makes it a strong-ticket baseline.
    """

    description = "keep a random subset (own seeded generator), chosen once at apply"

    def __init__(self, sparsity: float | None = None, scope: str = "global", seed: int = 0, *,
                 amount: float | None = None, rounding: str = "torch") -> None:
        super().__init__(sparsity, scope, amount=amount, rounding=rounding)
        if not is_integer(seed):
            raise TypeError(f"random: seed must be an int, got {seed!r}")
        self.seed = int(seed)

    def _generator(self) -> torch.Generator:
        # A stream of its own: see the module docstring for why not manual_seed(self.seed).
        digest = hashlib.sha256(f"torch_slt.random:{self.seed}".encode()).digest()
        return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little"))

    def scores(self, model: nn.Module, targets: list[tuple[str, nn.Module]]) -> list[Tensor]:
        gen = self._generator()
        return [torch.randn(target_tensor(t).shape, generator=gen).to(target_tensor(t).device)
                for t in targets]

    def tensor_scores(self, weight: Tensor) -> Tensor:
        return torch.randn(weight.shape, generator=self._generator()).to(weight.device)
