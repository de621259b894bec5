"""Turn :class:`RunSettings` into a run: the data, the model spec, the gated model, the training config.

Everything is validated here, before a command writes or trains anything; bad input becomes a
:class:`CLIError` that names the flag.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from dataclasses import dataclass, replace
from typing import Any

import torch

import torch_slt
from torch_slt.cli.settings import CLIError, RunSettings, flag_of
from torch_slt.core.errors import SettingError, SLTError

#: Samples per class handed to data-driven one-shot methods (SNIP, GraSP), as in Synaptic-Flow.
SCORING_SAMPLES_PER_CLASS = 10
#: The longest sparsity-target ramp find / sweep give a gate method, in optimiser steps (ramp_fraction).
MAX_RAMP_STEPS = 1000
#: The lowest gate learning rate a long sparsity-target run of stg gets by default (target_gate_lr).
MIN_TARGET_GATE_LR = 1e-2


@dataclass
class Prepared:
    """Everything validated before anything is written: data, spec, gated model, method kwargs."""

    settings: RunSettings
    splits: Any
    spec: Any
    model: torch.nn.Module
    method_kwargs: dict[str, Any]
    train_config: Any
    device: torch.device

    #: the gating method of this run; None for the dense baseline
    method: str | None = None

    @property
    def trains_weights(self) -> bool:
        """Whether the run trains the surviving weights: the dense baseline, ``--train-weights`` (the
        one-shot methods' default), or a method that trains them with its mask (``cs``)."""
        return (self.method is None or self.train_config.train_weights
                or torch_slt.get_method(self.method).trains_weights)


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input while preparing a run (turned into CLIError)."""
    return (SLTError, ValueError, TypeError, ImportError, FileNotFoundError, KeyError)


def load_data(s: RunSettings):
    from torch_slt.experiment.data import DATASETS, load_dataset

    if s.dataset not in DATASETS:
        raise CLIError(f"unknown dataset {s.dataset!r}; choose one of {', '.join(DATASETS)}.")
    try:
        return load_dataset(s.dataset, s.data_dir, download=bool(s.download), val_fraction=s.val_fraction,
                            seed=s.seed)
    except user_errors() + (OSError,) as err:
        raise CLIError(str(err)) from None


def method_kwargs(method: str, s: RunSettings, sparsity: float | None, splits: Any,
                  device: torch.device) -> dict[str, Any]:
    """The method's keyword arguments from the flags; flags the method does not take are an error."""
    try:
        cls = torch_slt.get_method(method)
    except SLTError as err:
        raise CLIError(str(err)) from None
    params = inspect.signature(cls.__init__).parameters
    given = {"lam": s.lam, "sigma": s.sigma, "sparsity": sparsity,
             "granularity": None if s.granularity == "weight" else s.granularity}
    kwargs = {k: v for k, v in given.items() if v is not None}
    _refuse_overrides(kwargs, s.method_args)
    kwargs.update(s.method_args)
    for key in kwargs:
        if key not in params or key.startswith("_") or key in ("data", "loss_fn"):
            flag = f"--{key}" if key in given else f"--method-arg {key}=..."
            raise CLIError(f"{flag} does not apply to method {method!r}; it takes "
                           f"{', '.join(method_flags(params, given))}.")
    if "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = s.seed
    if "total_steps" in params and "total_steps" not in kwargs and (kwargs.get("sparsity") is not None
                                                                     or "sparsity" not in params):
        # the sparsity target's schedule (or cs's temperature) spans the run (fit's batches: the last
        # one may be short)
        kwargs["total_steps"] = s.training.epochs * math.ceil(len(splits.train) / s.training.batch_size)
        if "ramp" in params and "ramp" not in kwargs and kwargs.get("sparsity") is not None:
            kwargs["ramp"] = ramp_fraction(params["ramp"].default, kwargs["total_steps"])
    if "data" in params:
        kwargs["data"] = [scoring_batch(splits, s.seed, device)]
    return kwargs


def _refuse_overrides(flags: dict[str, Any], method_args: dict[str, Any]) -> None:
    """A ``--method-arg`` may not set what a flag already sets (``--lam 2 --method-arg lam=1`` trained
    with 1 and recorded 2 in the report)."""
    clash = [k for k in method_args if k in flags]
    if clash:
        pairs = "; ".join(f"--method-arg {k}={method_args[k]!r} and {_FLAGS.get(k, '--' + k)} {flags[k]!r}"
                          for k in clash)
        raise CLIError(f"{pairs} both set {', '.join(clash)}; give each setting once (drop the "
                       f"--method-arg, or the flag).")


#: The flag of each keyword argument that has one.
_FLAGS = {"lam": "--lam", "sigma": "--sigma", "sparsity": "--sparsity (--sparsities in a sweep)",
          "granularity": "--granularity"}


#: Method arguments the CLI fills itself (from --seed, --epochs x batches, the training split).
_FILLED = ("seed", "total_steps", "data", "loss_fn")


def method_flags(params: Any, own_flags: dict[str, Any]) -> list[str]:
    """The command-line spelling of a method's hyperparameters: its own flag (``--sparsity``) where
    it has one, else ``--method-arg NAME=VALUE`` (``scope`` -> ``--method-arg scope=...``)."""
    names = [n for n in params if n != "self" and not n.startswith("_") and n not in _FILLED
             and params[n].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    return [f"--{n}" if n in own_flags else f"--method-arg {n}=VALUE" for n in names] or ["no hyperparameter flag"]


def ramp_fraction(default: float, total_steps: int) -> float:
    """The sparsity target's ramp as a fraction of the run: the method's (half the run), but at most
    :data:`MAX_RAMP_STEPS` optimiser steps.

    Why a cap: the gates move about ``lr`` per Adam step whatever the run's length, so a ramp of half
    of a long run keeps them under the target's penalty at every intermediate sparsity for thousands of
    steps. On lenet300 / Fashion-MNIST at 0.9 (54k images, 20 epochs: 16,880 steps) a ramp of 8,440
    steps ended at 72.6 % test accuracy, one of 1,000 steps at 84.3 % (val 85.8 %); a short run
    (digits: 420 steps) keeps the method's half-run ramp.
    """
    return min(float(default), MAX_RAMP_STEPS / max(1, total_steps))


def target_gate_lr(default: float, total_steps: int) -> float:
    """stg's default gate learning rate for a sparsity-target run of ``total_steps`` optimiser steps:
    the method's (5e-2) up to :data:`MAX_RAMP_STEPS` steps, then ``default * MAX_RAMP_STEPS /
    total_steps`` (the same total travel), but not below :data:`MIN_TARGET_GATE_LR`.

    Why: Adam moves a gate about ``lr`` per step, and a long run at 5e-2 keeps the gates noisy near the
    target's boundary to the end. On lenet300 / Fashion-MNIST at 0.9 (16,880 steps) 5e-2 ended at
    84.0 % test accuracy and 1e-2 at 85.2 % (cosine: 84.3 and 85.2 %); the short runs the default was
    set on (digits: 420 steps; conv nets at 240 steps, where 1e-2 lost 9-13 points at 0.5 and 0.7) keep 5e-2.
    """
    same_travel = float(default) * MAX_RAMP_STEPS / max(1, total_steps)
    return max(MIN_TARGET_GATE_LR, min(float(default), same_travel))


def full_method_config(model: torch.nn.Module, given: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of the method as applied (defaults included), for the report."""
    from torch_slt.core.metadata import method_config

    hook = next(torch_slt.gated_tensors(model))[2]
    return {**method_config(hook), **{k: v for k, v in given.items() if k not in ("data", "loss_fn")}}


def check_method_settings(s: RunSettings, method: str, sparsity: float | None, splits: Any) -> None:
    """Build the method once (not applied) so that a sweep fails before its first run, not midway."""
    kwargs = method_kwargs(method, s, sparsity, splits, torch.device("cpu"))
    try:
        torch_slt.get_method(method)(**kwargs)
    except user_errors() as err:
        raise CLIError(f"{method}: {err}") from None


def scoring_batch(splits: Any, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of the training split (10 per class on average), for SNIP / GraSP."""
    n = min(len(splits.train), SCORING_SAMPLES_PER_CLASS * splits.num_classes)
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed))[:n]
    items = [splits.train[int(i)] for i in order]
    x = torch.stack([torch.as_tensor(item[0]) for item in items]).to(device)
    y = torch.as_tensor([int(item[1]) for item in items]).to(device)
    return x, y


def train_config(s: RunSettings, method: str | None, device: torch.device,
                 model: torch.nn.Module | None = None):
    """The :class:`TrainConfig` of the run, with the method's defaults (for ``model``) filled in and checked."""
    config = replace(s.training, seed=s.seed, device=str(device))
    try:
        return config.resolved(method, model)
    except SettingError as err:
        raise CLIError(f"{flag_of(err.setting)} {err.value!r} {err.reason}") from None


def long_run_config(config, s: RunSettings, method: str, model: torch.nn.Module, kwargs: dict[str, Any]):
    """``config`` with stg's gate learning rate lowered for a long sparsity-target run
    (:func:`target_gate_lr`) when the user gave no ``--lr``; otherwise ``config`` itself."""
    from torch_slt.experiment.train.config import METHOD_DEFAULTS, method_defaults

    if (s.training.lr is not None or kwargs.get("sparsity") is None or "total_steps" not in kwargs
            or method_defaults(method, model) is not METHOD_DEFAULTS["stg"]):
        return config
    return replace(config, lr=target_gate_lr(config.lr, kwargs["total_steps"]))


def dry_forward(model: torch.nn.Module, s: RunSettings, splits: Any, device: torch.device) -> None:
    """One forward on two training samples, before anything is gated or written.

    A model that cannot run on the dataset's inputs (``timm:vit_tiny_patch16_224`` has 16x16 patches,
    digits are 8x8) failed in the first training step, after the run folder was made, with torch's
    own error; this says which flags to change instead. In eval mode under ``no_grad``: no batch
    statistic moves and no random number is drawn."""
    x = torch.stack([torch.as_tensor(splits.train[i][0]) for i in range(min(2, len(splits.train)))])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(device))
    except (RuntimeError, ValueError, TypeError, AssertionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CLIError(f"--model {s.model} cannot run on --dataset {s.dataset} (inputs {tuple(splits.in_shape)}): "
                       f"{first}. Choose a model that fits inputs of this size (the zoo's models, e.g. "
                       f"--model lenet300, conv4, resnet18 or vit, are built for the dataset's input size), a "
                       f"timm model whose patches or strides fit, or a dataset with larger images. Nothing "
                       f"was written.") from None
    finally:
        model.train(was_training)
    from torch_slt.experiment.zoo import logits

    width = logits(out).shape[-1]
    if width != splits.num_classes:
        raise CLIError(f"--model {s.model} outputs {width} classes but --dataset {s.dataset} has "
                       f"{splits.num_classes}. Nothing was written.")


def apply_seed(seed: int) -> int:
    """The seed of the random draws ``apply`` makes (edgepopup's scores, hardconcrete's log alpha).

    A hash of the run's seed rather than the seed itself: the network's weights are drawn from a
    generator seeded with ``seed``, and scores drawn from the same stream would repeat the weights'
    values (the same reason :mod:`torch_slt.methods.random` hashes its seed)."""
    digest = hashlib.sha256(f"torch_slt.cli.apply:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seeded_apply(model: torch.nn.Module, method: str, run_seed: int, device: torch.device,
                 **kwargs: Any) -> torch.nn.Module:
    """``torch_slt.apply`` with torch's global generator seeded from the run's seed, then restored.

    Methods draw their initial state from torch's global generator, so without this the ticket
    depended on whatever ran before in the process (a sweep's earlier cells, an earlier ``find``): a
    run is reproduced by its ``--seed`` alone, and a sweep's cells do not depend on their order."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else None):
        torch.manual_seed(apply_seed(run_seed))
        return torch_slt.apply(model, method, **kwargs)


def prepare(s: RunSettings, method: str | None, sparsity: float | None, splits: Any) -> Prepared:
    """Build the spec and the model, gate it (``method`` None: the dense baseline), resolve training."""
    from torch_slt.experiment.train import resolve_device
    from torch_slt.experiment.zoo import ModelSpec, build_model

    try:
        device = resolve_device(s.device)
        from torch_slt.experiment.init import UNSCALED, canonical

        density = 1.0 if canonical(s.init) in UNSCALED or sparsity is None else 1.0 - sparsity
        spec = ModelSpec(s.model, tuple(splits.in_shape), splits.num_classes, width=s.width, init=s.init,
                         density=density, seed=s.seed)
        model = build_model(spec).to(device)
        config = train_config(s, method, device, model)
        dry_forward(model, s, splits, device)
        prep = Prepared(s, splits, spec, model, {}, config, device, method)
        if method is not None:
            kwargs = method_kwargs(method, s, sparsity, splits, device)
            prep.train_config = long_run_config(prep.train_config, s, method, model, kwargs)
            seeded_apply(model, method, s.seed, device, freeze=not prep.trains_weights, **kwargs)
            prep.method_kwargs = full_method_config(model, kwargs)
    except CLIError:
        raise
    except user_errors() as err:
        raise CLIError(str(err)) from None
    prep.method_kwargs.pop("data", None)
    return prep
