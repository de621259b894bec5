r"""Continuous Sparsification (``cs``): a soft mask that a rising temperature makes binary.

Savarese, Silva & Maire, "Winning the Lottery with Continuous Sparsification", NeurIPS 2020
(https://arxiv.org/abs/1912.04427); reference code ``lolemacs/continuous-sparsification``
(``models/layers.py``, ``main.py``). A *weak*-ticket method: the weights are trained together with the
mask, and the ticket is then rewound and retrained (see ``docs/methods/cs.md``).

Each weight gets a mask logit :math:`s` (``weight_scores``, all equal to ``mask_init`` = :math:`s_0` at
the start). In train mode the weight is :math:`w \cdot \sigma(\beta s) / \sigma(s_0)` (the reference's
scaling: the soft mask starts at 1 when :math:`s = s_0`), and :func:`torch_slt.penalty` adds
:math:`\lambda \sum \sigma(\beta s) / \sigma(s_0) / N`, the L1 norm of the soft mask per gated weight.
The temperature :math:`\beta` (``weight_beta``, a buffer) starts at 1 and grows geometrically to
``final_temp`` (200) over ``total_steps`` optimizer steps on the scores (:mod:`torch_slt.core.schedule`:
extra forwards and ``penalty()`` calls do not move it), as the reference multiplies it by
``final_temp ** (1 / (epochs - 1))`` every epoch: the sigmoid becomes a step and the soft mask binary.
The hard mask is :math:`s > 0`; :func:`to_ticket` ends the search (training then uses the hard mask
too, for the rewound retraining). Between rounds, :func:`next_round` sets :math:`\beta \leftarrow 1` and then
:math:`s \leftarrow \min(s, s_0)`, the reference's ``prune`` (its ``main.py`` sets ``model.temp = 1``
before ``model.prune()``, and ``prune`` clamps ``temp * s``): removed weights keep their own negative
logit, a distance from the threshold that the next round's search can undo, and kept ones restart
from :math:`s_0`.

Differences from the reference, on purpose: the eval/ticket mask is the boolean :math:`s > 0` (the
reference also multiplies it by :math:`1/\sigma(s_0) = 2`, which the rewound retraining absorbs);
``lam`` multiplies the soft mask's *mean* over the gated weights (torch_slt's penalty convention), so the
reference's ``lmbda`` (1e-8 on the raw sum) is ``lam = lmbda * N`` (about 2.7e-3 for its ResNet-20's
0.27 M masked weights, 2.7e-3 for lenet300's 266 k).

What the reference masks and how it trains: only the 3x3 convolutions (its ``SoftMaskedConv2d``; the 1x1
downsample convolutions and the linear classifier stay dense), trained with SGD, momentum 0.9,
**Nesterov**, lr 0.1 for weights and logits alike. torch_slt gates every Linear / Conv weight by
default; ``targets=reference_targets`` gates what the reference gates, and
``TrainConfig(optimizer="sgd", momentum=0.9, nesterov=True)`` trains as it does.

Example:
    >>> import torch, torch_slt
    >>> from torch_slt.methods.cs import temperature
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> model = torch_slt.apply(model, "cs", lam=0.1, total_steps=100)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)   # weights and masks
    >>> x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    >>> loss = torch.nn.functional.cross_entropy(model(x), y) + torch_slt.penalty(model)
    >>> loss.backward(); opt.step()
    >>> round(temperature(model), 4)    # 200 ** (1 / 99) after one optimizer step
    1.055
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from torch_slt.core.base import LearnedMaskMethod
from torch_slt.core.errors import NotGatedError
from torch_slt.core.registry import register_method
from torch_slt.core.schedule import register_clock, unregister_clock
from torch_slt.core.validation import check_finite, check_nonnegative, check_optional_positive_int

#: Below this initial logit float32's sigmoid underflows (to a subnormal near -87, to 0 near -104).
_MASK_INIT_MIN = -80.0


@register_method("cs")
class ContinuousSparsification(LearnedMaskMethod):
    """Soft mask ``sigmoid(beta * s) / sigmoid(s0)`` with an annealed temperature; see the module docstring.

    Args:
        lam: multiplier of the L1 penalty on the soft mask (its mean over the gated weights); 0 disables.
        mask_init: ``s0``, the initial logit of every weight (0 as the paper; below 0 prunes more).
        final_temp: the temperature reached at the end of a round (200).
        total_steps: optimizer steps of one round; beta grows from 1 to ``final_temp`` over them.
            ``None``: beta stays where it is (set it with :func:`set_temperature`).
        ticket: the search is over: train and eval forwards both use the hard mask ``s > 0`` and there is
            no penalty (the reference's ``model.ticket = True``); set by :func:`to_ticket`.
    """

    added_names = ("beta", "step")
    description = "continuous sparsification (Savarese et al. 2020): sigmoid(beta s) mask, beta annealed; weights trained"
    fields = ("scores",)
    trains_weights = True

    def __init__(self, lam: float = 1e-2, mask_init: float = 0.0, final_temp: float = 200.0,
                 total_steps: int | None = None, ticket: bool = False) -> None:
        self.lam = check_nonnegative("lam", lam, "cs")
        self.mask_init = check_finite("mask_init", mask_init, "cs")
        if self.mask_init < _MASK_INIT_MIN:
            raise ValueError(
                f"cs: mask_init={mask_init!r} is below {_MASK_INIT_MIN}: sigmoid(mask_init) underflows to 0 "
                f"in float32, so the soft mask sigmoid(beta s) / sigmoid(mask_init) starts as 0 / 0. The "
                f"paper uses 0; a negative value prunes more, use one in [{_MASK_INIT_MIN}, 0)")
        self.final_temp = check_finite("final_temp", final_temp, "cs")
        if self.final_temp < 1:
            raise ValueError(f"cs: final_temp={final_temp!r} must be at least 1 (the temperature starts at 1 "
                             f"and rises to it; the reference uses 200)")
        self.total_steps = check_optional_positive_int("total_steps", total_steps, "cs")
        if not isinstance(ticket, bool):
            raise TypeError(f"cs: ticket={ticket!r} must be True or False")
        self.ticket = ticket
        self._scale = 1.0 / (1.0 / (1.0 + math.exp(-self.mask_init)))   # 1 / sigmoid(s0)

    # ------------------------------------------------------------------ state
    def init_state(self, module: nn.Module, orig: Tensor, mask, importance_scores) -> None:
        name = self._tensor_name
        dtype = torch.promote_types(orig.dtype, torch.float32)
        scores = torch.full(orig.shape, self.mask_init, dtype=dtype, device=orig.device)
        module.register_parameter(f"{name}_scores", nn.Parameter(scores))
        module.register_buffer(f"{name}_beta", torch.ones((), dtype=torch.float32, device=orig.device))
        module.register_buffer(f"{name}_step", torch.zeros((), dtype=torch.int64, device=orig.device))
        # This gate is its own clock: each optimizer step on its scores anneals beta once.
        self._module = module
        register_clock(self)

    def clock(self) -> ContinuousSparsification:
        return self

    def __setstate__(self, state: dict) -> None:  # deepcopy / unpickle: a new clock to drive
        self.__dict__.update(state)
        if "_module" in state:
            register_clock(self)

    def gate_parameters(self) -> list[Tensor]:
        scores = self._module._parameters.get(f"{self._tensor_name}_scores")
        return [] if scores is None else [scores]

    @property
    def step(self) -> Tensor:
        """Optimizer steps of this round (a device counter: beta is updated on the device)."""
        return self._module._buffers[self._tensor_name + "_step"]

    def on_optimizer_step(self) -> None:
        if self.total_steps is not None and not self.ticket and self.is_gated(self._module):
            self._advance(self._module)

    def is_gated(self, module: nn.Module) -> bool:
        return f"{self._tensor_name}_scores" in module._parameters

    def _undo(self, module: nn.Module, orig: nn.Parameter, drop_pre_hook: bool = True) -> None:
        for suffix in ("_beta", "_step"):
            module._buffers.pop(self._tensor_name + suffix, None)
        super()._undo(module, orig, drop_pre_hook)
        unregister_clock(self)

    def beta(self, module: nn.Module) -> Tensor:
        return module._buffers[self._tensor_name + "_beta"]

    # ------------------------------------------------------------------ masks
    def soft_mask(self, module: nn.Module) -> Tensor:
        """``sigmoid(beta * s) / sigmoid(s0)``, differentiable in ``s``."""
        scores = self.field(module, "scores")
        return torch.sigmoid(self.beta(module) * scores) * self._scale

    def hard_mask(self, module: nn.Module) -> Tensor:
        return self.field(module, "scores").detach() > 0

    def relaxed_weight(self, module: nn.Module, orig: Tensor, mask: Tensor) -> Tensor:
        if self.ticket:  # retraining the ticket: the weights see the hard mask, the scores are fixed
            return orig * mask
        return orig * self.soft_mask(module).to(orig.dtype)

    def _advance(self, module: nn.Module) -> None:
        """One optimizer step: beta = final_temp ** (step / (total_steps - 1)), capped at final_temp."""
        step = module._buffers[self._tensor_name + "_step"]
        with torch.no_grad():
            step += 1
            span = max(self.total_steps - 1, 1)
            exponent = torch.clamp(step.to(torch.float32), max=span) / span
            self.beta(module).copy_(torch.pow(torch.tensor(self.final_temp, device=step.device), exponent))

    def expected_kept(self, module: nn.Module) -> tuple[Tensor, int] | None:
        if self.ticket:
            return None
        mask = self.soft_mask(module)
        return mask.sum(dtype=torch.promote_types(mask.dtype, torch.float32)), mask.numel()


def reference_targets(name: str, module: nn.Module) -> bool:
    """The reference's masked layers: convolutions with a kernel larger than 1 (``SoftMaskedConv2d``);
    1x1 downsample convolutions, linear layers and the classifier stay dense. Pass it as
    ``torch_slt.apply(model, "cs", targets=reference_targets)``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.LazyLinear(10))
        >>> [reference_targets(n, m) for n, m in net.named_children()]
        [True, False, False, False]
    """
    return isinstance(module, nn.Conv2d) and any(k > 1 for k in module.kernel_size)


# ---------------------------------------------------------------------------------------- rounds
def _gates(model: nn.Module) -> list[tuple[nn.Module, ContinuousSparsification]]:
    from torch_slt.core.api import gated_tensors

    found = [(m, h) for _, m, h in gated_tensors(model) if isinstance(h, ContinuousSparsification)]
    if not found:
        raise NotGatedError("cs: the model has no 'cs' gates; call torch_slt.apply(model, 'cs', ...) first")
    return found


def temperature(model: nn.Module) -> float:
    """The current temperature beta (of the first ``cs`` gate; all of one ``apply`` move together)."""
    module, hook = _gates(model)[0]
    return float(hook.beta(module))


def set_temperature(model: nn.Module, beta: float) -> None:
    """Set beta on every ``cs`` gate (for a loop that anneals per epoch, as the reference does)."""
    value = check_finite("beta", beta, "cs.set_temperature")
    if value <= 0:
        raise ValueError(f"cs.set_temperature: beta={beta!r} must be positive")
    for module, hook in _gates(model):
        hook.beta(module).fill_(value)


def to_ticket(model: nn.Module) -> None:
    """End the search: every ``cs`` gate uses its hard mask ``s > 0`` in training too, its scores stop
    training (``requires_grad=False``) and the penalty is off. Then rewind the weights and retrain them
    (``docs/methods/cs.md``)."""
    for module, hook in _gates(model):
        hook.ticket = True
        hook.field(module, "scores").requires_grad_(False)


@torch.no_grad()
def next_round(model: nn.Module) -> None:
    """Start a new round (the reference's ``prune``): beta and the step counter back to 1 and 0, then
    ``s <- min(s, s0)``. The reference resets its temperature to 1 *before* ``prune`` clamps
    ``temp * s``, so the clamp sees beta = 1: kept weights restart from ``s0``, removed ones keep their
    logit (not ``beta * s``, which at beta = 200 would put them out of the next round's reach)."""
    for module, hook in _gates(model):
        scores = hook.field(module, "scores")
        hook.beta(module).fill_(1.0)
        scores.copy_(torch.clamp(scores, max=hook.mask_init))
        module._buffers[hook._tensor_name + "_step"].zero_()
