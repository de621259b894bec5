r"""Weight initialisations for strong lottery tickets (Ramanujan et al., CVPR 2020, section 4).

A strong ticket keeps a subset of frozen random weights, so *which* random numbers the network starts
from matters: the edge-popup paper compares three initialisations, all Kaiming-style with the
fan-in :math:`n_{in}` and the ReLU gain :math:`\sqrt 2`:

================================ ===============================================================
``"kaiming-normal"`` (default)    :math:`w \sim \mathcal N(0,\ 2 / n_{in})`
``"scaled-kaiming-normal"``       :math:`w \sim \mathcal N(0,\ 2 / (n_{in} \cdot k))`
``"signed-constant"``             :math:`w = \pm\sqrt{2 / (n_{in} \cdot k)}`, sign drawn at random
``"unscaled-signed-constant"``    :math:`w = \pm\sqrt{2 / n_{in}}`, sign drawn at random (never scaled)
================================ ===============================================================

``k`` is ``density``, the fraction of weights **kept** (``1 - sparsity``). Dividing the variance by
``k`` keeps the variance of a layer's output after pruning equal to Kaiming's, which is what the
paper's "scaled" variants do. Its reference code multiplies the fan by ``1 - prune_rate`` where its
``prune_rate`` is the kept fraction (allenai/hidden-networks issue #9), so the code and the paper agree
only at ``k = 0.5``; torch_slt follows the paper: ``density`` is the kept fraction, full stop.
``signed-constant`` uses ``density`` too (``density=1`` gives the unscaled "signed Kaiming constant");
``kaiming-normal`` and ``unscaled-signed-constant`` never do. The command line passes
``density = 1 - sparsity``, so ``unscaled-signed-constant`` is how it gets the paper's unscaled
signed constant at any sparsity. The reference's config names are accepted too (:data:`ALIASES`:
``ukn``, ``kn``, ``sc``, ``usc``).

Every ``nn.Linear``, ``nn.Conv1d/2d/3d`` and transformers ``Conv1D`` weight is (re)drawn; biases,
norms and embeddings are left as the module made them. Random numbers are drawn on the CPU in float32
(then copied to the weight's device and dtype), so the same generator gives the same weights on every
device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from torch_slt.core.targets import is_default_target

INITIALIZERS: tuple[str, ...] = ("kaiming-normal", "scaled-kaiming-normal", "signed-constant",
                                 "unscaled-signed-constant")
#: The edge-popup paper's / hidden-networks' short names (``configs/smallscale/*/*_ukn_*.yml`` ...).
ALIASES: dict[str, str] = {"ukn": "kaiming-normal", "kn": "scaled-kaiming-normal", "sc": "signed-constant",
                           "usc": "unscaled-signed-constant"}
#: The schemes that ignore ``density``.
UNSCALED: tuple[str, ...] = ("kaiming-normal", "unscaled-signed-constant")


def canonical(scheme: str) -> str:
    """The name in :data:`INITIALIZERS` of ``scheme`` (itself, or the full name of an alias such as
    ``"usc"``); an unknown name is returned unchanged, for the caller's error."""
    return ALIASES.get(scheme, scheme)

_RELU_GAIN = math.sqrt(2.0)


def fan_in(module: nn.Module) -> int:
    """The fan-in of a layer's weight: inputs per output unit (per group for grouped convolutions).

    transformers' ``Conv1D`` stores its weight transposed (``in x out``), so its fan-in is the first
    dimension; for ``nn.Linear`` and ``nn.ConvNd`` it is the product of all but the first.
    """
    weight = module.weight
    if _is_hf_conv1d(module):
        return int(weight.shape[0])
    return int(weight[0].numel())


def kaiming_std(fan: int, density: float = 1.0) -> float:
    """``sqrt(2 / (fan * density))``: the Kaiming ReLU standard deviation, scaled for the kept fraction."""
    return _RELU_GAIN / math.sqrt(fan * density)


def initialize(model: nn.Module, scheme: str = "kaiming-normal", *, density: float = 1.0,
               generator: torch.Generator | None = None) -> nn.Module:
    """Redraw the weight of every default target layer of ``model`` in place and return ``model``.

    Args:
        model: any ``nn.Module``; its ``nn.Linear``, ``nn.Conv1d/2d/3d`` and transformers ``Conv1D``
            weights are redrawn, layer by layer in ``named_modules`` order.
        scheme: one of :data:`INITIALIZERS` or :data:`ALIASES` (see the module docstring).
        density: the fraction of weights that will be **kept** (``1 - sparsity``), in (0, 1]; scales
            ``scaled-kaiming-normal`` and ``signed-constant``, ignored by :data:`UNSCALED`.
        generator: a CPU ``torch.Generator`` to draw from; ``None`` uses torch's global RNG.

    Raises:
        ValueError: unknown ``scheme`` or ``density`` outside (0, 1].

    Example:
        >>> import torch, torch_slt
        >>> layer = torch.nn.Linear(50, 4, bias=False)
        >>> g = torch.Generator().manual_seed(0)
        >>> _ = torch_slt.init.initialize(layer, "signed-constant", density=0.5, generator=g)
        >>> sorted(set(round(v, 4) for v in layer.weight.abs().flatten().tolist()))  # sqrt(2/(50*0.5))
        [0.2828]
    """
    scheme = canonical(scheme)
    if scheme not in INITIALIZERS:
        raise ValueError(f"initialize(): unknown scheme {scheme!r}; choose one of {', '.join(INITIALIZERS)} "
                         f"(or {', '.join(ALIASES)})")
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 < density <= 1.0:
        raise ValueError(
            f"initialize(): density={density!r} must be in (0, 1]; it is the fraction of weights KEPT "
            f"(density = 1 - sparsity, so sparsity 0.9 is density 0.1)"
        )
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("initialize(): generator must be a CPU torch.Generator (numbers are drawn on CPU)")
    for module in model.modules():
        if not is_default_target(module) or not isinstance(module._parameters.get("weight"), Tensor):
            continue
        weight = module.weight
        scale = 1.0 if scheme in UNSCALED else density
        std = kaiming_std(fan_in(module), scale)
        signed = scheme in ("signed-constant", "unscaled-signed-constant")
        with torch.no_grad():
            in_place = weight.device.type == "cpu" and weight.dtype == torch.float32
            draw = weight if in_place else torch.empty(weight.shape, dtype=torch.float32)
            draw.normal_(0.0, 1.0 if signed else std, generator=generator)
            if signed:
                draw.copy_(torch.where(draw >= 0, std, -std))
            if not in_place:
                weight.copy_(draw)
    return model


def _is_hf_conv1d(module: nn.Module) -> bool:
    return any(c.__name__ == "Conv1D" and c.__module__.startswith("transformers")
               for c in type(module).__mro__)
