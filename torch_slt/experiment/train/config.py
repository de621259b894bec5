"""Training settings: :class:`TrainConfig`, the per-method optimiser defaults, and :class:`FitResult`."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from torch import nn

from torch_slt.core.batchnorm import batchnorm_layers, normalization_layers
from torch_slt.core.errors import SettingError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
#: Settings that may differ between an interrupted run and its resumption.
_RESUME_FREE = ("device", "quiet", "stop_after", "num_workers")


@dataclass(frozen=True)
class MethodDefaults:
    """Optimiser settings of one method (``lr``, ``weight_decay`` for the masks; ``weight_lr`` for the
    weights when they are trained too), and where they come from."""

    optimizer: str
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    weight_lr: float = 1e-3
    #: Whether the surviving weights are trained when the user does not say (``train_weights=None``).
    train_weights: bool = False
    source: str = ""


# Gate learning rates: about a tenth of the distance from a gate's initial value to the keep threshold
# per Adam step, so a gate can cross within tens of steps while noisy steps average out. The stg and L0
# references (1e-5 and 1e-3) gate a few features over thousands of full-batch epochs instead.
_GATES = MethodDefaults(
    "adam", 5e-2, source="Adam as in the stg reference; lr 0.05 = 1/10 of the distance from mu_init "
    "0.5 to the threshold 0 (stg's 1e-5 is for thousands of full-batch epochs); no weight decay, which "
    "would pull every gate towards the threshold")
_ONE_SHOT = MethodDefaults(
    "sgd", 0.1, 0.9, 1e-4, "cosine", weight_lr=0.1, train_weights=True,
    source="Synaptic-Flow post-training (SGD momentum 0.9, lr 0.1, wd 1e-4), cosine instead of steps; "
    "the weights train by default: the mask is chosen once at apply, so a one-shot ticket of frozen "
    "random weights has nothing left to learn and sits at chance (SNIP, GraSP and SynFlow prune at "
    "initialisation and then train; train_weights=False keeps the weights frozen)")

_ONE_SHOT_NORM_FREE = MethodDefaults(
    "adam", 1e-3, schedule="cosine", weight_lr=1e-3, train_weights=True,
    source="a one-shot mask on a network without BatchNorm that is not an MLP (the Conv-2/4/6 of the "
    "lottery ticket papers, ViTs, Swin): Adam 1e-3, cosine, as the lottery ticket hypothesis trains "
    "Conv-2/4/6 (Adam 2e-4 to 3e-4) and ViTs are trained with Adam(W). SGD 0.1 with momentum, the "
    "Synaptic-Flow recipe, is for BatchNorm networks: on digits it left the GraSP tickets of the "
    "norm-free conv2/4/6 and SNIP's of conv4 at chance (a GraSP mask raises the logits 100-1000x) and "
    "every one-shot ViT ticket at chance (bench/results/defaults.md)")

_ONE_SHOT_MLP = MethodDefaults(
    "adam", 1e-2, schedule="cosine", weight_lr=1e-2, train_weights=True,
    source="a one-shot mask on an MLP (every weight in an nn.Linear, no normalisation: lenet300): Adam "
    "1e-2, cosine. Over 3 seeds on digits (bench/results/loops.md, fit's defaults) Adam 1e-3 cost "
    "lenet300 0.6-1.5 points against the earlier SGD 0.1 (magnitude 97.4 -> 96.8 %, random 97.6 -> "
    "96.1 %) and 1e-2 gives 98.2 and 98.3 %; the conv nets and ViTs keep 1e-3 (1e-2: conv2 magnitude "
    "97.2 +- 2.0 against 98.5 +- 1.0 %, conv4 GraSP and the ViT at chance)")

_SUPERMASK_NORM_FREE = MethodDefaults(
    "adam", 0.1, source="torch_slt's, not the reference's: supermask on a network without any "
    "normalisation layer (lenet300, conv2/4/6). A sampled mask keeping half the weights shrinks every "
    "layer's output, so the logit gradients of a deep norm-free network are orders of magnitude "
    "smaller than SGD's lr 100 was set for; Adam's step does not depend on the gradient's scale. On "
    "digits (find, 20 epochs): conv6 8.6 -> 94.7 %, conv4 79.4 -> 97.8 %, conv2 96.4 -> 98.9 %, "
    "lenet300 94.4 -> 96.9 %. With BatchNorm or LayerNorm SGD stays (Adam 0.1: resnet18 77.2 -> 24.2 %, "
    "swin 76.9 -> 64.1 %)")

#: Per-method optimiser defaults; ``"dense"`` is the dense-trained baseline, ``"learned"`` and
#: ``"fixed"`` cover methods without a row of their own.
METHOD_DEFAULTS: dict[str, MethodDefaults] = {
    "stg": _GATES,
    "hardconcrete": MethodDefaults(
        "adam", 0.15, source="Adam as in the L0 reference; lr 0.15 = 1/10 of the distance from log_alpha 0 "
        "(droprate 0.5) to the threshold beta * log(-gamma / zeta) = -1.6 (L0's 1e-3 is for 200 epochs); "
        "no weight decay"),
    "edgepopup": MethodDefaults(
        "sgd", 0.1, 0.9, 5e-4, "cosine", weight_lr=0.1,
        source="hidden-networks (SGD momentum 0.9, lr 0.1, cosine, weight decay 5e-4 on the scores: "
        "simple_mnist_example.py and the CIFAR ResNet-18 configs)"),
    "supermask": MethodDefaults(
        "sgd", 100.0, 0.9, 0.0, "cosine", weight_lr=0.1,
        source="Zhou et al. (SGD momentum 0.9, lr 100 for the FC/MNIST supermask; hidden-networks' "
        "sample baseline uses lr 200, cosine, no weight decay): the logit gradients are tiny"),
    "cs": MethodDefaults(
        "adam", 0.01, 0.0, 0.0, "cosine", weight_lr=1e-3, train_weights=True,
        source="torch_slt's, not the reference's: Adam, lr 0.01 for the mask logits and 1e-3 for the "
        "weights, cosine. continuous-sparsification main.py uses SGD momentum 0.9 at lr 0.1 on a "
        "BatchNorm ResNet-20; on the norm-free conv nets that diverges (conv4: NaN after epoch 1), and "
        "its steps on the logits grow with the temperature beta, flipping many masks at once late in the "
        "run (conv2 at chance). TrainConfig(optimizer='sgd', lr=0.1, momentum=0.9, weight_lr=0.1) is the "
        "reference's"),
    "dense": MethodDefaults(
        "sgd", 0.1, 0.9, 1e-4, "cosine", weight_lr=0.1,
        source="open_lth / Synaptic-Flow dense training: SGD momentum 0.9, lr 0.1, wd 1e-4, cosine"),
    "learned": _GATES,
    "fixed": _ONE_SHOT,
    "fixed, no BatchNorm": _ONE_SHOT_NORM_FREE,
    "fixed, MLP": _ONE_SHOT_MLP,
    "supermask, no normalisation": _SUPERMASK_NORM_FREE,
}


def method_defaults(method: str | None, model: nn.Module | None = None) -> MethodDefaults:
    """The row of :data:`METHOD_DEFAULTS` for ``method`` (a registered name, or ``None`` = dense).

    A one-shot method (a fixed mask whose surviving weights train) gets the ``"fixed, no BatchNorm"``
    row when ``model`` is given and has no BatchNorm layer: the SGD recipe of its papers is for
    BatchNorm networks, and the ``"fixed, MLP"`` row (Adam 1e-2) when every weight of ``model`` is
    in an ``nn.Linear`` (:func:`is_mlp`). ``supermask`` gets the ``"supermask, no normalisation"``
    row (Adam 0.1) when ``model`` has no normalisation layer at all.
    """
    if method is None:
        return METHOD_DEFAULTS["dense"]
    if method == "supermask" and model is not None and not normalization_layers(model):
        return METHOD_DEFAULTS["supermask, no normalisation"]
    if method in METHOD_DEFAULTS:
        return METHOD_DEFAULTS[method]
    from torch_slt.core.registry import get_method

    if get_method(method).learned:
        return METHOD_DEFAULTS["learned"]
    if model is not None and is_mlp(model):
        return METHOD_DEFAULTS["fixed, MLP"]
    if model is not None and not batchnorm_layers(model):
        return METHOD_DEFAULTS["fixed, no BatchNorm"]
    return METHOD_DEFAULTS["fixed"]


def is_mlp(model: nn.Module) -> bool:
    """Whether every module holding parameters is an ``nn.Linear`` (no convolution, attention block
    with its own parameters, embedding or normalisation layer)."""
    owners = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    return bool(owners) and all(isinstance(m, nn.Linear) for m in owners) and not normalization_layers(model)


@dataclass
class TrainConfig:
    """How :func:`fit` trains. ``None`` means "the method's default" (:data:`METHOD_DEFAULTS`).

    Args:
        epochs: passes over the training split.
        batch_size: training batch size (evaluation uses larger batches).
        lr: learning rate of the masks (gates, scores); of the weights for the dense baseline.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        momentum: SGD momentum.
        nesterov: Nesterov momentum for SGD (the continuous-sparsification and Synaptic-Flow references
            use it); needs ``optimizer="sgd"`` and a momentum above 0.
        weight_decay: weight decay of the masks (of the weights for the dense baseline).
        schedule: ``"cosine"`` (annealed to 0 over ``epochs``, stepped per epoch) or ``"constant"``.
        weight_lr: learning rate of the weights when ``train_weights`` is set.
        train_weights: train the surviving weights too (a weak ticket); the masks stay learned.
            ``None`` (the default) takes the method's default: off for the learned masks (stg,
            hardconcrete, edgepopup, supermask: a strong ticket), on for the one-shot methods
            (magnitude, random, snip, grasp, synflow: pruning at initialisation, then training) and
            for cs, which trains its weights with its mask.
        recalibrate_batchnorm: after every epoch, re-estimate the BatchNorm statistics with the ticket's
            hard mask (:func:`torch_slt.recalibrate_batchnorm` on 8 batches: 2,048 images of the
            training Dataset in order, or the first 8 batches of the DataLoader given) when the method's
            training forward samples or relaxes the mask (stg, hardconcrete, supermask, cs), so validation and the returned model see the ticket's own
            statistics. No effect without BatchNorm, or with edge-popup and the one-shot methods.
        seed: seeds shuffling and every random draw of training.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``.
        quiet: no progress bar and no per-epoch lines.
        stop_after: stop after this many epochs, as a killed run would (to test ``resume``).
        num_workers: DataLoader worker processes.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    weight_lr: float | None = None
    nesterov: bool = False
    train_weights: bool | None = None
    recalibrate_batchnorm: bool = True
    seed: int = 0
    device: str = "cpu"
    quiet: bool = False
    stop_after: int | None = None
    num_workers: int = 0

    def resolved(self, method: str | None, model: nn.Module | None = None) -> TrainConfig:
        """A copy whose ``None`` settings are filled from ``method``'s defaults (for ``model``, when
        given: see :func:`method_defaults`), checked."""
        d = method_defaults(method, model)
        filled = {f: getattr(d, f) for f in ("optimizer", "lr", "momentum", "weight_decay", "schedule",
                                             "weight_lr", "train_weights") if getattr(self, f) is None}
        cfg = replace(self, **filled)
        cfg._check()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def _check(self) -> None:
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        if self.optimizer not in OPTIMIZERS:
            raise SettingError("optimizer", self.optimizer, f"is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise SettingError("schedule", self.schedule, f"is not one of {', '.join(SCHEDULES)}")
        for name in ("lr", "weight_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SettingError(name, value, "must be a positive number")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise SettingError(name, value, "must be a number >= 0")
        for name in ("nesterov", "train_weights", "recalibrate_batchnorm"):
            if not isinstance(getattr(self, name), bool):
                raise SettingError(name, getattr(self, name), "must be True or False")
        if self.nesterov and (self.optimizer != "sgd" or not self.momentum > 0):
            raise SettingError("nesterov", self.nesterov, f"needs optimizer='sgd' with momentum > 0 (got "
                               f"optimizer={self.optimizer!r}, momentum={self.momentum!r}); set both, "
                               f"e.g. momentum=0.9 as the references")
        if self.stop_after is not None:
            _positive_int("stop_after", self.stop_after)


def training_seed(seed: int) -> int:
    """The seed of torch's global RNG in :func:`fit` (the gate noise): a hash of ``seed``, never ``seed``.

    Why not ``seed`` itself: the zoo draws a network's weights with ``normal_`` from a generator seeded
    with the spec's seed, layer by layer, and the stg gates draw their noise with ``randn_like`` from
    the global RNG, layer by layer in the same order. With both seeded by the same number (``--seed``
    seeds both) the first training forward's noise *was* the weights' normal draws, so every gate
    opened in proportion to its weight: each layer's effective weights had a positive mean and the
    activations of a bias-free, norm-free conv net grew about 10x per layer (conv4 on digits: logits
    of 9e5, a first-step loss of 7e4). That single step filled Adam's second-moment estimate for
    thousands of steps, so the gates barely moved again and ``find --model conv4`` ended at chance.
    """
    digest = hashlib.sha256(f"torch_slt.fit:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2 ** 63


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingError(name, value, "must be a positive integer")


@dataclass
class FitResult:
    """What :func:`fit` did: one ``history`` row per epoch (``epoch``, ``loss``, ``task_loss`` (the cross
    entropy alone), ``val_accuracy``, ``sparsity``, ``lr``), whether all epochs ran, the epoch it resumed
    from, the training time in seconds (summed over interrupted and resumed parts), and ``alarms``: what
    :func:`~torch_slt.experiment.train.alarms.training_alarms` found (a diverged loss, a finished run at
    chance validation accuracy), also warned as a ``TrainingAlarm``."""

    config: TrainConfig
    method: str | None
    history: list[dict[str, float]] = field(default_factory=list)
    completed: bool = False
    resumed_from: int = 0
    wall_time: float = 0.0
    alarms: list[str] = field(default_factory=list)

    @property
    def val_accuracy(self) -> float | None:
        return self.history[-1]["val_accuracy"] if self.history else None
