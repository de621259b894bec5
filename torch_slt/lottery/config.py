"""The settings of iterative magnitude pruning (:class:`IMPConfig`) and the lottery's errors."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from torch_slt.core.errors import SettingError

#: The sanity-check controls (see :mod:`torch_slt.lottery.controls`).
CONTROLS = ("reinit", "random_mask", "shuffle", "resample")
SCOPES = ("global", "layer")
_OWNER = "IMPConfig"

#: Named pruning settings of the two references. The default :class:`IMPConfig` (global scope, the output
#: layer of an all-Linear net at half rate) matches neither:
#:
#: * ``"paper"``: Frankle & Carbin 2019's LeNet-300-100 (``google-research/lottery-ticket-hypothesis``,
#:   ``mnist_fc/constants.py``): every layer pruned on its own at 20 % per round, the output layer at 10 %.
#: * ``"open_lth"``: ``facebookresearch/open_lth``'s LeNet-300-100 (``models/mnist_lenet.py``): one global
#:   ranking at 20 % per round (``sparse_global.py``), the output layer ``fc.weight`` left dense.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"scope": "layer", "prune_rate": 0.2, "output_rate": 0.1},
    "open_lth": {"scope": "global", "prune_rate": 0.2, "output_rate": 0.0},
}


@dataclass(frozen=True)
class IMPConfig:
    """How :func:`torch_slt.lottery.imp` prunes.

    Args:
        rounds: pruning rounds after the dense round 0 (each removes ``prune_rate`` of the remaining
            weights: 19 rounds at 0.2 leave 1.4%).
        prune_rate: fraction of the *remaining* weights removed per round (0.2 in Frankle & Carbin 2019).
        output_rate: the rate of the output layer (the last targeted tensor). ``None``: half of
            ``prune_rate`` when every targeted layer is an ``nn.Linear`` (the paper's fully connected
            nets), else ``prune_rate``. ``0`` leaves the output layer dense (open_lth's LeNet).
        scope: ``"global"`` ranks the weights of all targeted tensors together (open_lth), ``"layer"``
            prunes each tensor at the rate (the original paper). A tensor with its own rate (the
            output layer) is always pruned on its own.
        rewind: the training iteration whose weights every round restarts from: 0 = the initial weights
            (Frankle & Carbin 2019), k > 0 = late rewinding (Frankle et al. 2020, "Linear Mode
            Connectivity and the Lottery Ticket Hypothesis"); a round then trains the remaining
            iterations, from k to the end.
        eval_every: iterations between evaluations (validation and test), from which the early-stopping
            iteration is chosen; ``None``: at the end of every epoch.
        controls: sanity checks trained at every round next to the ticket, from the same starting
            weights: any of ``"reinit"``, ``"random_mask"``, ``"shuffle"``, ``"resample"``.
        control_seed: seed of the controls' random draws (mixed with the round number).
    """

    rounds: int = 10
    prune_rate: float = 0.2
    output_rate: float | None = None
    scope: str = "global"
    rewind: int = 0
    eval_every: int | None = None
    controls: tuple[str, ...] = ()
    control_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "controls", tuple(self.controls))
        _int_at_least("rounds", self.rounds, 0)
        _rate("prune_rate", self.prune_rate, allow_zero=False)
        if self.output_rate is not None:
            _rate("output_rate", self.output_rate, allow_zero=True)
        if self.scope not in SCOPES:
            raise SettingError("scope", self.scope, f"is not one of {', '.join(SCOPES)}", _OWNER)
        _int_at_least("rewind", self.rewind, 0)
        if self.eval_every is not None:
            _int_at_least("eval_every", self.eval_every, 1)
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown:
            raise SettingError("controls", unknown, f"are not controls; choose from {', '.join(CONTROLS)}",
                               _OWNER)
        _int_at_least("control_seed", self.control_seed, 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "controls": list(self.controls)}

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> IMPConfig:
        """The settings of a reference (:data:`PRESETS`: ``"paper"`` or ``"open_lth"``), with ``overrides``
        (e.g. ``rounds=19``) on top.

        Example:
            >>> IMPConfig.preset("paper", rounds=3)
            IMPConfig(rounds=3, prune_rate=0.2, output_rate=0.1, scope='layer', rewind=0, eval_every=None, controls=(), control_seed=0)
        """
        if name not in PRESETS:
            raise SettingError("preset", name, f"is not one of {', '.join(PRESETS)}", _OWNER)
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IMPConfig:
        return cls(**{**d, "controls": tuple(d.get("controls", ()))})


def _int_at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SettingError(name, value, f"must be an integer >= {low}", _OWNER)


def _rate(name: str, value: Any, *, allow_zero: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    low_ok = ok and (value >= 0 if allow_zero else value > 0)
    if not (low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise SettingError(name, value, f"must be a fraction in {bound} of the remaining weights, e.g. 0.2",
                           _OWNER)
